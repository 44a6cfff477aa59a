"""Data preparation: prepare_textbooks.py builds the training corpus."""
