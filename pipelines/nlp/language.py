"""Language filter: keep English text (langdetect, made deterministic).

The original step ran ``langdetect.detect(value[:1000])`` and kept the record when the
answer was ``'en'``, any exception counting as "not English". langdetect draws random
samples, so without a seed its answer may change from run to run; here the detector
factory is seeded with 0 (``DetectorFactory.seed = 0``), which makes every call
deterministic for a given text.

The language profiles (about 55 JSON files) are loaded lazily, once per process, under
a lock; each call then builds its own ``Detector``, so :func:`is_english` is thread-safe.
"""

from __future__ import annotations

import logging

from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from gears_pipelines.nlp.once import loaded_once

__all__ = ["PREFIX_CHARS", "SEED", "detect_language", "is_english", "warm_up"]

log = logging.getLogger(__name__)

#: How many leading characters are examined (as the original).
PREFIX_CHARS = 1000
#: The seed of langdetect's sampling.
SEED = 0


@loaded_once
def _get_factory() -> DetectorFactory:
    """The process-wide seeded detector factory, loaded on first use."""
    # Also seed langdetect's own module-level detect(), for code that uses it.
    DetectorFactory.seed = SEED
    factory = DetectorFactory()
    factory.set_seed(SEED)
    factory.load_profile(PROFILES_DIRECTORY)
    log.debug("langdetect: %d language profiles loaded", len(factory.get_lang_list()))
    return factory


def warm_up() -> None:
    """Load the language profiles now (otherwise the first call does)."""
    _get_factory()


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code langdetect gives the first 1000 characters, or ``None``.

    ``None`` when detection fails (empty text, no letters, ...), as the original.
    """
    try:
        detector = _get_factory().create()
        detector.append(text[:PREFIX_CHARS])
        return str(detector.detect())
    except LangDetectException as exc:
        log.debug("language detection failed: %s", exc)
        return None
    except Exception:  # the original swallowed every exception
        log.debug("language detection failed", exc_info=True)
        return None


def is_english(text: str) -> bool:
    """Whether langdetect (seeded) finds ``text``'s first 1000 characters English."""
    return detect_language(text) == "en"
