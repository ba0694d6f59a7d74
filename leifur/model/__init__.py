"""The shared model: API names, typed views of the objects read, settings. Imports nothing of Leifur."""
