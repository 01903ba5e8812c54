"""Test helpers: tiny data, local servers, tiny models and registries, project runs."""
