"""The web app's route groups; each module exports `routes`, a `web.RouteTableDef`."""
