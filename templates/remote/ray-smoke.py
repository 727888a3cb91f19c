import json, socket, time
import ray
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
alive = [n for n in ray.nodes() if n["Alive"]]

@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def where(i):
    time.sleep(2)  # hold the CPU so SPREAD cannot place two on one node
    return {"task": i, "host": socket.gethostname(), "ip": ray.util.get_node_ip_address()}

print(json.dumps(ray.get([where.remote(i) for i in range(len(alive))], timeout=120)))
