"""mlshift: the wizard that turns a model or a script into an OpenShift GPU deployment.

Importing this package is cheap: nothing here pulls in torch, transformers or the OpenShift
client; commands import what they need when they run.
"""

__version__ = "0.1.0"
