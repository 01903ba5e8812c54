"""dogbreeds: recognise a dog breed from a photo."""
