"""GovCA core: certificate policy, issuance and persistence, free of Flask and PKCS#11."""
