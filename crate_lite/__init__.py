"""crate_lite: the package behind the course "White-box transformers from first principles".

Each module holds what a chapter derives and later chapters reuse; every public object's
docstring names the chapter and equation it comes from.
"""

__version__ = "0.1.0"
