"""The web dashboard (issue 12): pages served by the engine on its API port."""
