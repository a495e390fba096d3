"""Capacity planner: from a measured pod profile to Knative autoscaling settings, by simulation.

    profile.py    measure one pod of the service (k6), write a profile JSON
    pod.py        the pod model built from a profile, and the cold start
    traffic.py    traffic shapes: constant, step, burst, diurnal, replay of a k6 CSV or access log
    kpa.py        the Knative Pod Autoscaler and its reconciler, as Knative implements them
    annotations.py  the revision's autoscaling settings: from a rendered manifest, to a patch
    simulate.py   the discrete-event simulation of a revision
    search.py     the cheapest settings that meet an SLO
    report.py     figures and charts
    validate.py   the pod model against the real service, open loop
    cli.py        `python -m knative.plan profile | simulate | recommend`
"""
