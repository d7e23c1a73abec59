"""A fleet repository in git: clusters declared in short files, turned into what
the management cluster runs.

`load` reads a repository directory into the typed declarations of
`fleet.api.declarations` and reports every mistake with its file, line and column;
the blueprints, the renderer and the publisher take it from there.
"""
