"""Relying parties' side: CRLs, OCSP and CA certificates over HTTP."""
