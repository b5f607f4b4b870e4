"""Where results go: ``github`` (branch + pull request through the REST API), ``local`` (branch).

A forge never pushes: the workspace pushes the branch with the environment ``git_env`` gives it,
then ``publish`` turns the pushed branch into the session's pull request, if the forge has such a
thing. ``remote`` reads git remote URLs in all their spellings for every forge.
"""
