"""pkilint (RFC 5280 certificate, CRL and OCSP validators) as a gate before release."""
from __future__ import annotations

import functools
from dataclasses import dataclass

from pkilint import loader, report
from pkilint.pkix import certificate, extension, name
from pkilint.validation import ValidationFindingSeverity

BLOCKING = (ValidationFindingSeverity.FATAL, ValidationFindingSeverity.ERROR)


@dataclass(frozen=True)
class LintResult:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


@functools.lru_cache(maxsize=1)
def _certificate_validator():
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS,
                                               extension.EXTENSION_MAPPINGS),
        [certificate.create_issuer_validator_container([]),
         certificate.create_validity_validator_container(),
         certificate.create_subject_validator_container([]),
         certificate.create_extensions_validator_container([]),
         certificate.create_spki_validator_container([])])


def _collect(results) -> LintResult:
    errors: list[str] = []
    warnings: list[str] = []
    for result in results:
        for finding in result.finding_descriptions:
            text = f"{finding.finding.code}@{result.node.path}"
            if finding.message:
                text += f": {finding.message}"
            if finding.finding.severity in BLOCKING:
                errors.append(text)
            elif finding.finding.severity == ValidationFindingSeverity.WARNING:
                warnings.append(text)
    return LintResult(tuple(errors), tuple(warnings))


def lint_certificate(der: bytes) -> LintResult:
    doc = loader.load_der_certificate(der, "certificate")
    return _collect(_certificate_validator().validate(doc.root))


__all__ = ["LintResult", "lint_certificate", "report"]
