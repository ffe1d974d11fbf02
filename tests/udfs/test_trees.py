from __future__ import annotations

from udfs.trees import repo_roots, walk_repo

MIT = "Permission is hereby granted, free of charge, to any person obtaining a copy\n"


def test_walk_lists_every_file_with_license_and_skip_reason(tmp_path):
    repo = tmp_path / "trees" / "demo"
    (repo / "pkg" / "_vendor").mkdir(parents=True)
    (repo / ".git").mkdir()
    (repo / "LICENSE").write_text(MIT)
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "_vendor" / "six.py").write_text("x = 1\n")
    (repo / "pkg" / "data.csv").write_text("a,b\n")
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    [(name, root)] = repo_roots(tmp_path / "trees", "repos")
    assert name == "demo"
    files = {f.relpath: (f.language, f.license, f.skip) for f in walk_repo(name, root)}
    assert files == {
        ".git/HEAD": (None, "mit", "vcs_metadata"),
        "LICENSE": (None, "mit", "unsupported_extension"),
        "pkg/__init__.py": ("python", "mit", None),
        "pkg/_vendor/six.py": ("python", "mit", None),
        "pkg/data.csv": (None, "mit", "unsupported_extension"),
    }
    assert repo_roots(repo, "repo") == [("demo", repo.resolve())]
