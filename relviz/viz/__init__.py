"""Plotly figures for the app (and notebooks): each a pure function of library results."""
