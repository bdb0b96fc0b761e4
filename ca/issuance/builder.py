"""Builds the TBS certificate for a profile: pure, no I/O, no keys."""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from ca.profiles.model import Profile


@dataclass(frozen=True)
class IssuerView:
    """What the builder needs to know about the issuing CA."""

    name: str  # short name used in URLs
    certificate: x509.Certificate
    base_url: str

    @functools.cached_property
    def public_key(self):
        """The issuer's public key (parsed once per view; views are cached per CA)."""
        return self.certificate.public_key()

    @functools.cached_property
    def authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        ski = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)

    @property
    def crl_url(self) -> str:
        return f"{self.base_url}/pki/crl/{self.name}.crl"

    @property
    def cert_url(self) -> str:
        return f"{self.base_url}/pki/certs/{self.name}.crt"

    @property
    def ocsp_url(self) -> str:
        return f"{self.base_url}/ocsp"


@dataclass(frozen=True)
class CertificateContent:
    subject: x509.Name
    public_key: object
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    email: str | None = None
    dns_names: tuple[str, ...] = ()


def _permitted_dn(text: str) -> x509.Name:
    attrs = []
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        oid = {"C": NameOID.COUNTRY_NAME, "O": NameOID.ORGANIZATION_NAME,
               "L": NameOID.LOCALITY_NAME}[key.strip().upper()]
        attrs.append(x509.NameAttribute(oid, value.strip()))
    return x509.Name(attrs)


def build(profile: Profile, issuer: IssuerView | None, content: CertificateContent,
          ) -> x509.CertificateBuilder:
    """The certificate for `profile`. `issuer=None` means self-signed (a root)."""
    issuer_name = issuer.certificate.subject if issuer else content.subject
    b = (x509.CertificateBuilder()
         .subject_name(content.subject)
         .issuer_name(issuer_name)
         .public_key(content.public_key)
         .serial_number(content.serial)
         .not_valid_before(content.not_before)
         .not_valid_after(content.not_after))
    # RFC 5280 4.2.1.9: basicConstraints critical in CA certificates; marked critical here too.
    b = b.add_extension(x509.BasicConstraints(ca=profile.is_ca, path_length=profile.path_length
                                              if profile.is_ca else None), critical=True)
    # RFC 5280 4.2.1.3: keyUsage SHOULD be critical.
    b = b.add_extension(profile.key_usage_extension(), critical=True)
    if profile.extended_key_usage:
        b = b.add_extension(x509.ExtendedKeyUsage(profile.eku_oids()), critical=False)
    ski = x509.SubjectKeyIdentifier.from_public_key(content.public_key)
    b = b.add_extension(ski, critical=False)
    if issuer is None:
        # RFC 5280 4.2.1.1 lets a self-signed certificate omit the AKI; pkilint (and many
        # path builders) want it, and it costs nothing: it equals the SKI.
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                            critical=False)
    if issuer is not None:
        b = b.add_extension(issuer.authority_key_identifier, critical=False)
        if profile.crl_distribution_point:
            b = b.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(issuer.crl_url)], relative_name=None,
                reasons=None, crl_issuer=None)]), critical=False)
        access = [x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                                         x509.UniformResourceIdentifier(issuer.cert_url))]
        if profile.aia_ocsp:
            access.insert(0, x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                                    x509.UniformResourceIdentifier(issuer.ocsp_url)))
        b = b.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    san: list[x509.GeneralName] = []
    if profile.email_in_san and content.email:
        san.append(x509.RFC822Name(content.email))
    if profile.dns_in_san:
        san.extend(x509.DNSName(d) for d in content.dns_names)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if profile.certificate_policies:
        b = b.add_extension(x509.CertificatePolicies([
            x509.PolicyInformation(x509.ObjectIdentifier(o), None)
            for o in profile.certificate_policies]), critical=False)
    if profile.ocsp_nocheck:
        b = b.add_extension(x509.OCSPNoCheck(), critical=False)
    if profile.is_ca and profile.name_constraints_permitted_dn and issuer is not None:
        # RFC 5280 4.2.1.10: name constraints MUST be critical.
        b = b.add_extension(x509.NameConstraints(
            permitted_subtrees=[x509.DirectoryName(_permitted_dn(
                profile.name_constraints_permitted_dn))], excluded_subtrees=None), critical=True)
    return b
