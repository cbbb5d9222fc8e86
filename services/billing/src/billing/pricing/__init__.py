"""Prices: per SMS segment by country and route, per number order by provider/service/country."""
