"""Data about tasks: class names, prompt templates."""
