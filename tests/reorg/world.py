"""Test-only bulk loader: the 63 provinces of before 2025 as RA domains, with staff, seals and
issued certificates. The loader lives in ca.reorg.sampleworld (bench.reorg uses it too)."""
from ca.reorg.sampleworld import (DEPARTMENTS, GIVEN, UNITS, ensure_provinces,  # noqa: F401
                                  old_provinces, populate)
