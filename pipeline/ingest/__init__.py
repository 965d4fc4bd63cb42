"""Ingesting folders into an index: scan, prepare (decode, hash), embed and write, locally or as a Ray job. Imports the basics, models and store."""
