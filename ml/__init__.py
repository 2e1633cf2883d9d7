"""Model frameworks, artifacts and builders. Imported by workers, never by the API."""
