"""Licence plates: find each plate in a photo, then read it with a CRNN trained by CTC."""
