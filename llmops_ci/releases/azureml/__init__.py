"""``--backend azureml`` releases: prompt flow models on managed online endpoints (``release``, with the deployment
settings in ``settings``), and the dry run of an Agent Framework flow's route there (``agent_framework``).
Imported only for that backend (the ``[azure]`` extra)."""
