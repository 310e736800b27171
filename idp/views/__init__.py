"""Views, one module per flow; each stays thin."""
