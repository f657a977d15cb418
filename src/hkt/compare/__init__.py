"""Equal-budget comparisons of methods over seeds (``hkt compare``)."""
