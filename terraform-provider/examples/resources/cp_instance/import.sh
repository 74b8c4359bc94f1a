# By id: project/instance-id
terraform import cp_instance.orders acme/01939d3e-8c4f-7b7a-9a52-6f1d1c0e5a10

# By name: project/name (a live instance of that name in the project)
terraform import cp_instance.orders acme/orders-db
