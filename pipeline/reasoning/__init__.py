"""What the reasoning stages compute, as plain functions: plans and their checks, verification evidence and fusion, words and things matched through WordNet. Imports the basics and models."""
