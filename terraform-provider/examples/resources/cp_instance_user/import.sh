# project/instance-id/name (or instance-id/name in the provider's project)
terraform import cp_instance_user.reporting acme/01939d3e-8c4f-7b7a-9a52-6f1d1c0e5a10/reporting
