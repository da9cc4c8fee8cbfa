"""`python -m explorer shiplist`: check that cache/shipped and its trust list (TRUSTED.json) agree; --write relists.

The app reads a shipped entry only if the trust list names it with its manifest's sha256 (see explorer.core.cache).
Shipping commands (`sweep --ship`, `memorise --shipped`) keep the list up to date; run this before committing.
`--write` lists every shipped entry that matches its own manifest: run it only after reviewing what is there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from explorer.core.cache import TRUST_LIST, audit_trust, default_shipped_root, rebuild_trust_list


def main(argv: list[str]) -> int:
    """Print how the shipped folder and its trust list agree; 1 if they do not (after --write: if still not)."""
    ap = argparse.ArgumentParser(prog="python -m explorer shiplist", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true",
                    help=f"rewrite {TRUST_LIST} to list every entry there that matches its own manifest")
    ap.add_argument("--root", type=Path, default=None, help="the shipped folder (default: cache/shipped)")
    args = ap.parse_args(argv)
    root = args.root or default_shipped_root()
    audit = rebuild_trust_list(root) if args.write else audit_trust(root)
    print(f"{root / TRUST_LIST}: {len(audit.listed)} entries listed and present")
    for label, names in (("not listed (ignored by the app)", audit.unlisted),
                         ("listed but missing", audit.missing),
                         ("corrupt (do not match their own manifest; never listed)", audit.corrupt)):
        for name in names:
            print(f"  {label}: {name}")
    if not audit.ok:
        print("the app ignores shipped entries the list does not name; after reviewing them, "
              "`python -m explorer shiplist --write` lists them")
    return 0 if audit.ok else 1
