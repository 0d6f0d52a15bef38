"""``python -m attnas.train SPEC.json [--result OUT.json]``; works under ``torchrun`` too."""

from __future__ import annotations

from attnas.train.ddp_entry import main

if __name__ == "__main__":
    raise SystemExit(main())
