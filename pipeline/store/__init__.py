"""The gallery store: the Chroma index, its snapshot and on-disk vector cache, exact retrieval over it. Imports the basics and models."""
