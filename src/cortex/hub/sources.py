"""Where an import comes from: a Hub repo id, a Hub URL, or a local folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cortex.errors import SourceError

_HUB_URL = re.compile(
    r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<repo>[^/\s]+/[^/\s]+|[^/\s]+)"
    r"(?:/(?:tree|blob|resolve)/(?P<rev>[^/\s]+))?/?$"
)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


@dataclass(frozen=True)
class Source:
    """A parsed import source: ``kind`` is ``"hub"`` (``repo_id``, optional ``revision``) or ``"local"`` (``path``)."""

    kind: str
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    def default_name(self) -> str:
        """``Qwen/Qwen2.5-0.5B`` → ``qwen2.5-0.5b``; a folder → its lowercased folder name."""
        base = self.repo_id.split("/")[-1] if self.kind == "hub" else self.path.name
        name = re.sub(r"[^a-z0-9._+-]+", "-", base.lower()).strip("-.")
        return name or "model"


def parse_source(text: str, revision: str | None = None) -> Source:
    """Parse ``hub-id``, ``hf://hub-id``, a ``https://huggingface.co/...`` URL, or an existing folder."""
    if not text:
        raise SourceError("Empty model source. Pass a Hub id (org/name), a Hub URL, or a local folder.")
    p = Path(text).expanduser()
    if p.exists():
        if not p.is_dir():
            raise SourceError(
                f"{text!r} is a file, not a model folder. Pass the folder that holds config.json."
            )
        return Source(kind="local", path=p.resolve())
    if text.startswith(("/", "./", "../", "~")):
        raise SourceError(f"Local folder {text!r} does not exist. Check the path.")
    if text.startswith("hf://"):
        text = text[len("hf://"):]
        if "@" in text:
            text, rev = text.split("@", 1)
            revision = revision or rev
    m = _HUB_URL.match(text)
    if m:
        return Source(kind="hub", repo_id=m.group("repo"), revision=revision or m.group("rev"))
    if "://" in text:
        raise SourceError(f"URL {text!r} is not a Hugging Face model URL (https://huggingface.co/org/name).")
    if (not _REPO_ID.match(text) or ".." in text or "--" in text or text.endswith((".", "-"))
            or len(text) > 96):
        raise SourceError(
            f"Malformed Hub id {text!r}. Use 'org/name' (letters, digits, '-', '_', '.'), e.g. "
            "'Qwen/Qwen2.5-0.5B', or the path of a local folder."
        )
    return Source(kind="hub", repo_id=text, revision=revision)
