"""Named domains: a family plus its variant, written as one string such as ``"inverted_moving_digits"``.

A domain name is zero or more variant prefixes followed by a family name:

    prefixes  moving_ (position varies; otherwise centred), inverted_ (255 - image),
              noisy_ (additive pixel noise, std 0.1), textured_ (fixed background texture),
              cluttered_ (random-noise background), coloured_ / colored_ (random hue, RGB only)
    families  shapes, digits, letters, garments, plus any registered with register_family()
              or register_idx_domain() (e.g. "mnist" from local IDX files)

Streams, the domain-sequence environment and the evaluation suite all name data this way.
"""

from __future__ import annotations

from collections.abc import Callable

from .families import FAMILY_KINDS, ProceduralFamily, SpriteFamily, validate_image_args

__all__ = [
    "DOMAIN_NAMES",
    "VARIANT_PREFIXES",
    "list_domains",
    "list_families",
    "make_domain",
    "make_family",
    "parse_domain",
    "register_family",
]

# prefix -> variant keyword arguments it sets
VARIANT_PREFIXES: dict[str, dict] = {
    "moving": {"moving": True},
    "inverted": {"inverted": True},
    "noisy": {"noise": 0.1},
    "textured": {"background": "texture"},
    "cluttered": {"background": "noise"},
    "coloured": {"colour": "random"},
    "colored": {"colour": "random"},
}

FamilyFactory = Callable[..., SpriteFamily]  # (image_size, channels, seed, name=..., **variant) -> family
_FAMILY_FACTORIES: dict[str, FamilyFactory] = {}


def _procedural_factory(kind: str) -> FamilyFactory:
    def factory(image_size=32, channels=1, seed=0, **kwargs):
        return ProceduralFamily(kind, image_size, channels, seed, **kwargs)

    factory.__name__ = f"make_{kind}"
    return factory


for _kind in FAMILY_KINDS:
    _FAMILY_FACTORIES[_kind] = _procedural_factory(_kind)

_BASE_FAMILIES = tuple(FAMILY_KINDS)
#: The built-in domains: every family static and moving, each also inverted.
DOMAIN_NAMES: tuple[str, ...] = tuple(
    f"{inv}{mov}{fam}" for fam in _BASE_FAMILIES for inv in ("", "inverted_") for mov in ("", "moving_")
)


def register_family(name: str, factory: FamilyFactory, overwrite: bool = False) -> None:
    """Make ``name`` (and all its prefixed variants) usable in domain names.

    ``factory(image_size, channels, seed, name=..., **variant)`` must return a SpriteFamily.
    """
    if not isinstance(name, str) or not name or name.split("_")[0] in VARIANT_PREFIXES:
        raise ValueError(
            f"family name must be a non-empty string that does not start with a variant prefix "
            f"{sorted(VARIANT_PREFIXES)}; got {name!r}"
        )
    if name in _FAMILY_FACTORIES and not overwrite:
        raise ValueError(f"family {name!r} is already registered; pass overwrite=True to replace it")
    _FAMILY_FACTORIES[name] = factory


def list_families() -> list[str]:
    """Names of all registered families (built-in first)."""
    return list(_FAMILY_FACTORIES)


def list_domains(include_registered: bool = True) -> list[str]:
    """The built-in domain names, plus the static/moving/inverted forms of registered families."""
    names = list(DOMAIN_NAMES)
    if include_registered:
        for fam in _FAMILY_FACTORIES:
            if fam not in _BASE_FAMILIES:
                names += [f"{inv}{mov}{fam}" for inv in ("", "inverted_") for mov in ("", "moving_")]
    return names


def parse_domain(name: str) -> tuple[str, dict]:
    """Split a domain name into (family, variant kwargs); raises ValueError naming the problem."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a domain name must be a non-empty string such as 'moving_digits', got {name!r}")
    tokens = name.split("_")
    variant: dict = {}
    i = 0
    while i < len(tokens) - 1 and tokens[i] in VARIANT_PREFIXES:
        variant.update(VARIANT_PREFIXES[tokens[i]])
        i += 1
    family = "_".join(tokens[i:])
    if family not in _FAMILY_FACTORIES:
        raise ValueError(
            f"unknown sprite family {family!r} in domain {name!r}; known families: {list_families()}; "
            f"variant prefixes: {sorted(VARIANT_PREFIXES)} (e.g. 'inverted_moving_digits'). "
            "Register your own with register_family() or register_idx_domain()."
        )
    return family, variant


def make_domain(name: str, image_size: int = 32, channels: int = 1, seed: int = 0, **variant) -> SpriteFamily:
    """The family behind a domain name, e.g. ``make_domain("inverted_moving_digits", 64)``.

    ``seed`` fixes the procedural sprites (writers, textures); explicit ``variant`` keywords
    override those implied by the prefixes.
    """
    validate_image_args(image_size, channels)
    family, implied = parse_domain(name)
    kwargs = {**implied, **variant}
    return _FAMILY_FACTORIES[family](image_size=image_size, channels=channels, seed=seed, name=name, **kwargs)


def make_family(name: str, image_size: int = 32, channels: int = 1, seed: int = 0, **variant) -> SpriteFamily:
    """A sprite family by name (``"shapes"``, ``"digits"``, ``"letters"``, ``"garments"``, a
    registered one, or any domain name with prefixes), with variant keywords
    (``moving``, ``inverted``, ``background``, ``noise``, ``colour``, ``num_styles``)."""
    return make_domain(name, image_size=image_size, channels=channels, seed=seed, **variant)
