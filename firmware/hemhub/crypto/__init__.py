"""Cryptography that runs on the hub: P-256 ECDSA, key and CSR generation."""
