"""Spark stages: read Delta, transform DataFrames, write Delta. One module per stage."""
