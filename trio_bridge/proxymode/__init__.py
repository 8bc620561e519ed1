"""Interception proxy mode (contract section 11): CONNECT, TLS termination with leaf
certificates minted from an operator's CA, and the host -> provider map."""
