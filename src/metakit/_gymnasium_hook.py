"""Register metakit's environments with Gymnasium once both are imported, in either order,
so that `gymnasium.make("metakit/Navigation2D-v0")` works after `import metakit`, while a
program that never imports Gymnasium never pays for it (nor for MuJoCo)."""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings


def _register() -> None:
    try:
        from .rl.envs.gym import register_all  # noqa: PLC0415 (needs gymnasium, imported by now)

        register_all()
    except Exception as error:  # never break the user's `import gymnasium`; say what went wrong
        warnings.warn(f"metakit could not register its Gymnasium environments: {error!r}", stacklevel=2)


class _AfterGymnasium(importlib.abc.MetaPathFinder):
    """Finds gymnasium with the other finders, and registers right after it has run."""

    def find_spec(self, name, path=None, target=None):
        if name != "gymnasium":
            return None
        sys.meta_path.remove(self)  # once is enough
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    if "gymnasium" in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterGymnasium) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterGymnasium())
