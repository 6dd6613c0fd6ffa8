"""Units and analytes from a sample table's column names (``Au_ppb``, ``Fe2O3 (%)``, ``Cu [ppm]``).

Laboratories put the unit in the column name. :func:`parse_column` splits a name into the analyte
label and its unit, and says whether the label is an element (``Au``) or an oxide of one
(``Fe2O3``, ``Fe2O3T``, ``CaO``). Every mass-fraction unit of :data:`TO_PPM` converts to ppm:

============================================  ==========
unit (case-insensitive)                        x to ppm
============================================  ==========
``ppm``, ``mg/kg``, ``g/t``, ``gpt``, ``ug/g``   1
``ppb``, ``ug/kg``, ``mg/t``, ``ng/g``           0.001
``ppt`` (parts per trillion), ``ng/kg``          1e-6
``pct``, ``%``, ``wt%``, ``wtpct``, ``percent``  10,000
============================================  ==========

``ppt`` is read as parts per trillion, its meaning in trace-gold analysis (some laboratories use
it for parts per thousand: rename such a column ``_permil``, 1,000 ppm). A name without a unit
keeps its values as reported. An oxide of carbon, sulphur, hydrogen or nitrogen (``CO2``,
``SO3``, ``H2O``) is not a copy of an element: it measures another phase (carbonate, sulphate,
water).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Factor from each unit to ppm (keys in lower case).
TO_PPM: dict[str, float] = {
    "ppm": 1.0,
    "mg/kg": 1.0,
    "mg_kg": 1.0,
    "g/t": 1.0,
    "g_t": 1.0,
    "gpt": 1.0,
    "ug/g": 1.0,
    "µg/g": 1.0,
    "ppb": 1e-3,
    "ug/kg": 1e-3,
    "µg/kg": 1e-3,
    "mg/t": 1e-3,
    "ng/g": 1e-3,
    "ppt": 1e-6,
    "ng/kg": 1e-6,
    "permil": 1e3,
    "pct": 1e4,
    "%": 1e4,
    "wt%": 1e4,
    "wt_pct": 1e4,
    "wtpct": 1e4,
    "percent": 1e4,
}

# Elements reported by geochemical laboratories (no noble gases, no transuranics: "No", "Es"
# and the like would take identifiers for elements).
_SYMBOLS = """H Li Be B C N F Na Mg Al Si P S Cl K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Rb Sr Y
    Zr Nb Mo Ru Rh Pd Ag Cd In Sn Sb Te I Cs Ba La Ce Pr Nd Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W
    Re Os Ir Pt Au Hg Tl Pb Bi Th U"""
ELEMENTS = frozenset(_SYMBOLS.split())
# Oxides of these measure another phase, not a copy of the element.
_NOT_COPIES = frozenset({"C", "S", "H", "N"})
_OXIDE = re.compile(r"([A-Z][a-z]?)(\d*)O(\d*)(T|t|tot|TOT)?")
_BRACKETED = re.compile(r"(.+?)[\s_\-]*[\(\[]\s*([^\)\]]+?)\s*[\)\]]")


@dataclass(frozen=True)
class Analyte:
    """What a column name says about its content.

    ``label`` (the name without its unit), ``unit`` as written (None when the name has none),
    ``factor`` to ppm (None when no unit), and ``element``: the element symbol the label is or
    is an oxide of (None for other labels such as ``LOI``).
    """

    column: str
    label: str
    unit: str | None
    factor: float | None
    element: str | None
    oxide: bool

    @property
    def group(self) -> str:
        """Columns of the same group measure the same thing: the element, else the label."""
        return self.element or self.label


def _element_of(label: str) -> tuple[str | None, bool]:
    if label in ELEMENTS:
        return label, False
    if label.isupper() and len(label) <= 2 and label.capitalize() in ELEMENTS:
        return label.capitalize(), False  # AU, CU: a laboratory's upper-case header
    match = _OXIDE.fullmatch(label)
    if match and match.group(1) in ELEMENTS and match.group(1) not in _NOT_COPIES:
        return match.group(1), True
    return None, False


def parse_column(name: str) -> Analyte:
    """The analyte label, unit and element of a column name (see the module docstring)."""
    text = name.strip()
    label, unit = text, None
    bracketed = _BRACKETED.fullmatch(text)
    if bracketed and bracketed.group(2).lower() in TO_PPM:
        label, unit = bracketed.group(1).strip(), bracketed.group(2)
    else:
        low = text.lower()
        for key in sorted(TO_PPM, key=len, reverse=True):
            if not low.endswith(key) or len(low) == len(key):
                continue
            head = text[: len(text) - len(key)]
            stripped = head.rstrip(" _-")
            # "Au_ppm", "Au ppm", "Fe2O3%": a separator, or a symbol unit right after the label.
            if stripped and (stripped != head or not key[0].isalpha()):
                label, unit = stripped, text[len(head) :]
                break
    element, oxide = _element_of(label)
    factor = TO_PPM[unit.lower()] if unit is not None else None
    return Analyte(column=name, label=label, unit=unit, factor=factor, element=element, oxide=oxide)


def is_analyte(name: str) -> bool:
    """Whether a column name is an element, an oxide or carries a concentration unit."""
    parsed = parse_column(name)
    return parsed.element is not None or parsed.unit is not None
