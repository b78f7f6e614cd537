"""Import pymbar without its import-time banners (a JAX advertisement and a
general timeseries caveat, logged as warnings on import); later pymbar
warnings still show."""
import logging

_logger = logging.getLogger("pymbar")
_level = _logger.level
_logger.setLevel(logging.ERROR)
try:
    import pymbar  # noqa: F401
    from pymbar import timeseries  # noqa: F401
finally:
    _logger.setLevel(_level)

__all__ = ["pymbar", "timeseries"]
