"""A git repository with known commits, built with pygit2 for the commit-source tests.

Each commit's expected outcome is stated beside it: ``None`` (an example) or the skip reason
``udfs.commits`` must name. Authors and committers are fictional people whose names and e-mails
must reach no table.
"""

from __future__ import annotations

from pathlib import Path

AUTHOR = ("Jane Quinlan", "jane.quinlan@acme-widgets.io")
COMMITTER = ("Ravi Okonkwo", "ravi.okonkwo@acme-widgets.io")
PEOPLE = ("Jane Quinlan", "jane.quinlan", "Ravi Okonkwo", "ravi.okonkwo", "acme-widgets")

INVENTORY = '''"""Stock of a small shop."""


class Inventory:
    def __init__(self):
        self.items = {}

    def add(self, name, qty):
        self.items[name] = self.items.get(name, 0) + qty

    def total(self):
        return sum(self.items.values())
'''
INVENTORY_FIXED = INVENTORY.replace(
    "        return sum(self.items.values())\n",
    "        # negative quantities are returns; Jane Quinlan asked to count them out\n"
    "        return sum(q for q in self.items.values() if q > 0)\n")
INVENTORY_REMOVE = INVENTORY_FIXED + '''
    def remove(self, name):
        self.items.pop(name, None)
'''
INVENTORY_DOC = INVENTORY_FIXED.replace(
    "    def total(self):\n",
    "    def total(self):\n        \"\"\"Units in stock, returns left out.\"\"\"\n")
INVENTORY_MERGED = INVENTORY_DOC + '''
    def remove(self, name):
        self.items.pop(name, None)
'''
INVENTORY_REINDENTED = INVENTORY_MERGED.replace("\n\n\nclass", "\n\nclass").replace(
    "    def add(self, name, qty):\n", "    def add(self, name,  qty):\n")


def build(root: Path) -> tuple[Path, dict[str, str | None], dict[str, str]]:
    """Create the repository under ``root`` / "shop": (its path, commit id → expected reason,
    subject → commit id)."""
    import pygit2

    path = root / "shop"
    repo = pygit2.init_repository(str(path), initial_head="main")
    when = 1_700_000_000
    expected: dict[str, str | None] = {}
    ids: dict[str, str] = {}

    def commit(subject: str, files: dict[str, str | None], reason: str | None,
               parents: list | None = None, body: str = "", ref: str = "refs/heads/main"):
        nonlocal when
        for name, text in files.items():
            target = path / name
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        repo.index.add_all()
        repo.index.write()
        tree = repo.index.write_tree()
        when += 60
        author = pygit2.Signature(*AUTHOR, when, 0)
        committer = pygit2.Signature(*COMMITTER, when, 0)
        if parents is None:
            parents = [] if repo.head_is_unborn else [repo.head.target]
        message = subject + ("\n\n" + body if body else "") + "\n"
        oid = repo.create_commit(ref, author, committer, message, tree, parents)
        expected[str(oid)] = reason
        ids[subject] = str(oid)
        return oid

    commit("Add an inventory with add and total", {"inventory.py": INVENTORY,
                                                    "README.md": "# Shop\n"}, None)
    fixed = commit("fix(stock): leave returns out of the total (#12)",
                   {"inventory.py": INVENTORY_FIXED}, None,
                   body="Negative quantities are returns. Reported by Jane Quinlan "
                        "<jane.quinlan@acme-widgets.io>.\n\n"
                        "Signed-off-by: Jane Quinlan <jane.quinlan@acme-widgets.io>")
    # a side branch, and a merge of it
    repo.branches.local.create("feature", repo[fixed])
    (path / "inventory.py").write_text(INVENTORY_REMOVE)
    side = commit("Add a remove method to the inventory", {"inventory.py": INVENTORY_REMOVE},
                  None, parents=[fixed], ref="refs/heads/feature")
    main = commit("Document what total counts", {"inventory.py": INVENTORY_DOC}, None,
                  parents=[fixed])
    commit("Merge branch 'feature'", {"inventory.py": INVENTORY_MERGED}, "merge_commit",
           parents=[main, side])
    commit("Pin the dependencies in the lockfile",
           {"poetry.lock": "[[package]]\nname = \"requests\"\nversion = \"2.31.0\"\n"},
           "generated_only")
    commit("Reindent the inventory module", {"inventory.py": INVENTORY_REINDENTED},
           "whitespace_only")
    commit("Add the price table of every product",
           {"prices.py": "PRICES = {\n" + "".join(f"    'item{i}': {i}.99,\n"
                                                    for i in range(600)) + "}\n"},
           "huge_commit")
    commit("update", {"inventory.py": INVENTORY_REINDENTED + "\n# stock rules live here\n"},
           "message_uninformative")
    commit("Describe the shop in the readme", {"README.md": "# Shop\n\nA tiny shop.\n"},
           "no_code_change")
    commit("Count items with a helper in the inventory", {
        "inventory.py": INVENTORY_REINDENTED + "\n# stock rules live here\n\n\n"
                        "def count(inv):\n    return len(inv.items)\n"}, None)
    repo.checkout("refs/heads/main", strategy=pygit2.enums.CheckoutStrategy.FORCE)
    return path, expected, ids
