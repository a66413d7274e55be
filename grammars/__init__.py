"""The .sheaf grammar, shipped as package data (sheafdsl.grammars)."""
