"""A fake Hugging Face Hub that serves a local folder, swapped in at the HTTP transport only.

``huggingface_hub`` builds every request through one ``httpx2.Client``; :func:`install` replaces that
client's transport with a handler over ``root/<org>/<name>/`` (files of the ``main`` branch; extra
revisions under ``root/.revisions/<org>/<name>/<rev>/``). Everything above the transport — model_info,
snapshot_download, hf_hub_download, create_repo, upload_folder — runs unmodified.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import httpx2
from huggingface_hub import set_client_factory
from huggingface_hub.utils._http import default_client_factory


def _commit_of(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


class FakeHub:
    """State of the fake hub: ``root`` holds repos; ``requests`` logs (method, path) pairs."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []

    # -- repo layout -------------------------------------------------------
    def repo_dir(self, repo_id: str, rev: str | None = None) -> Path | None:
        main = self.root / repo_id
        if not main.is_dir():
            return None
        if rev in (None, "main") or rev == _commit_of(main):
            return main
        alt = self.root / ".revisions" / repo_id / rev
        if alt.is_dir():
            return alt
        for d in (self.root / ".revisions" / repo_id).glob("*") if (self.root / ".revisions" / repo_id).is_dir() else []:
            if _commit_of(d) == rev:
                return d
        return None

    def add_revision(self, repo_id: str, rev: str, src: Path) -> None:
        shutil.copytree(src, self.root / ".revisions" / repo_id / rev, dirs_exist_ok=True)

    # -- transport -----------------------------------------------------------
    def handle(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        self.requests.append((request.method, path))
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "repos"] and parts[2:] == ["create"]:
            body = json.loads(request.content or b"{}")
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            (self.root / repo_id).mkdir(parents=True, exist_ok=True)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{repo_id}", "name": repo_id})
        if parts == ["api", "validate-yaml"]:  # model-card metadata check made by push_to_hub
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if parts[:1] == ["api"] and parts[1] in ("models", "datasets", "spaces"):
            rest = parts[2:]
            for marker in ("revision", "preupload", "commit", "tree", "paths-info"):
                if marker in rest:
                    i = rest.index(marker)
                    repo_id, rev, tail = "/".join(rest[:i]), (rest[i + 1] if len(rest) > i + 1 else "main"), rest[i + 2:]
                    return getattr(self, "_" + marker.replace("-", "_"))(request, repo_id, rev, tail)
            return self._revision(request, "/".join(rest), "main", [])
        if "resolve" in parts:
            i = parts.index("resolve")
            start = 1 if parts[0] in ("datasets", "spaces") else 0
            repo_id, rev, file = "/".join(parts[start:i]), parts[i + 1], "/".join(parts[i + 2:])
            return self._resolve(request, repo_id, rev, file)
        return httpx2.Response(404, headers={"X-Error-Code": "RepoNotFound"})

    def _not_found(self, repo_id: str, rev: str) -> httpx2.Response:
        if not (self.root / repo_id).is_dir():
            return httpx2.Response(401, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "Repository not found"})
        return httpx2.Response(404, headers={"X-Error-Code": "RevisionNotFound"}, json={"error": "Invalid rev id"})

    def _revision(self, request, repo_id, rev, tail):
        folder = self.repo_dir(repo_id, rev)
        if folder is None:
            return self._not_found(repo_id, rev)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        card = {}
        readme = folder / "README.md"
        if readme.is_file() and readme.read_text().startswith("---"):
            for line in readme.read_text().split("---")[1].splitlines():
                if ":" in line:
                    k, v = line.split(":", 1)
                    card[k.strip()] = v.strip()
        sha = _commit_of(folder)
        return httpx2.Response(200, json={
            "id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
            "siblings": [{"rfilename": f} for f in files],
            "cardData": card, "tags": [f"license:{card['license']}"] if "license" in card else [],
        })

    def _tree(self, request, repo_id, rev, tail):
        folder = self.repo_dir(repo_id, rev)
        if folder is None:
            return self._not_found(repo_id, rev)
        sub = folder / "/".join(tail) if tail else folder
        items = [{"type": "file" if p.is_file() else "directory", "path": p.relative_to(folder).as_posix(),
                  "size": p.stat().st_size if p.is_file() else 0, "oid": hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else ""}
                 for p in sorted(sub.rglob("*"))]
        return httpx2.Response(200, json=items)

    def _paths_info(self, request, repo_id, rev, tail):
        return httpx2.Response(200, json=[])

    def _resolve(self, request, repo_id, rev, file):
        folder = self.repo_dir(repo_id, rev)
        if folder is None:
            return self._not_found(repo_id, rev)
        target = (folder / file).resolve()
        if folder.resolve() not in target.parents or not target.is_file():
            return httpx2.Response(404, headers={"X-Error-Code": "EntryNotFound"})
        data = target.read_bytes()
        headers = {"X-Repo-Commit": _commit_of(folder), "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return httpx2.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)

    def _preupload(self, request, repo_id, rev, tail):
        body = json.loads(request.content)
        return httpx2.Response(200, json={"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in body["files"]
        ], "commitOid": None})

    def _commit(self, request, repo_id, rev, tail):
        folder = self.root / repo_id
        folder.mkdir(parents=True, exist_ok=True)
        for line in request.content.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                dest = folder / item["value"]["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(base64.b64decode(item["value"]["content"]))
            elif item["key"] == "deletedFile":
                (folder / item["value"]["path"]).unlink(missing_ok=True)
            elif item["key"] == "lfsFile":
                raise AssertionError("the fake hub only accepts regular uploads")
        sha = _commit_of(folder)
        return httpx2.Response(200, json={"commitUrl": f"https://huggingface.co/{repo_id}/commit/{sha}",
                                          "commitOid": sha, "pullRequestUrl": None})


def install(root: Path) -> FakeHub:
    """Route all huggingface_hub HTTP traffic to a :class:`FakeHub` over ``root``; see :func:`uninstall`."""
    hub = FakeHub(root)
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub.handle), follow_redirects=True))
    return hub


def uninstall() -> None:
    set_client_factory(default_client_factory)
