"""Register cortex's model types with transformers' Auto classes once transformers is imported.

``import cortex`` must stay light (the ``cortex`` command starts without torch, so
``cortex models list`` answers at once), yet ``AutoModel.from_pretrained`` on a saved char LM or
NeuralTree must work after only ``import cortex``. So registration runs right away when
transformers is already loaded, and otherwise as soon as transformers is loaded *and* the import
that brought it in has finished. Waiting for the outermost import matters: when transformers is
first pulled in by, say, ``cortex.models.char_lm.configuration``, registering at that moment would
import ``cortex.models.char_lm`` while it is half-executed. A meta-path finder wraps the loaders
of ``transformers`` and of every ``cortex.*`` module to count nested imports; when the count
returns to zero with transformers loaded, it registers (once) and steps aside.

Nobody can call an Auto class before importing transformers, so the registration is always in
place in time.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from types import ModuleType

_state = threading.local()  # per-thread depth of wrapped imports in progress
_done = False
_busy = False


def _register() -> None:
    global _done, _busy
    if _done or _busy:
        return
    _busy = True
    try:
        from cortex.models import register_auto_classes

        register_auto_classes()
        _done = True
        uninstall()
    finally:
        _busy = False


class _SettledImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the loaders other finders return for the modules it watches."""

    @staticmethod
    def _watched(fullname: str) -> bool:
        return fullname == "transformers" or fullname.startswith("cortex.")

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001 (importlib protocol)
        if _done or not self._watched(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_maybe_register(module: ModuleType) -> None:
            _state.depth = getattr(_state, "depth", 0) + 1
            try:
                exec_module(module)
            finally:
                _state.depth -= 1
            if _state.depth == 0 and "transformers" in sys.modules:
                _register()

        loader.exec_module = exec_then_maybe_register
        return spec


_FINDER = _SettledImportFinder()


def uninstall() -> None:
    """Remove the import hook (idempotent)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)


def install() -> None:
    """Register now if transformers is loaded, else once an import brings it in and settles."""
    if "transformers" in sys.modules:
        _register()
    elif not _done and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
