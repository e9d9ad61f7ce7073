from .sinusoid import Sinusoid

__all__ = ["Sinusoid"]
