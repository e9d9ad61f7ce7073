from .archives import download, sha256_of, verify
from .omniglot import ARCHIVES, MINIMAL, Omniglot, load_omniglot

__all__ = ["ARCHIVES", "MINIMAL", "Omniglot", "load_omniglot", "download", "sha256_of", "verify"]
