"""Prompt sets, one folder each (default, imagescope, cireval): read as package data by lensgraph.pipeline.models.prompts."""
