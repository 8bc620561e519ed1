"""Producers of "something changed": each source loads its contents and pokes the reload channel."""
