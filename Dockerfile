# The demo cluster in one container: two grapes and three peers under
# supervisord, exactly as `supervisord -c conf/cluster.conf` runs them.
# Every process binds 127.0.0.1 inside the container; talk to the cluster
# with exchangectl in the same container:
#   docker build -t twisted-exchange .
#   docker run -d --name tx twisted-exchange
#   docker exec tx exchangectl status
#   docker exec tx exchangectl submit buy 1 100 --peer peer1
#   docker exec tx exchangectl book peer2
FROM python:3.11-slim
WORKDIR /opt/twisted-exchange
COPY . .
RUN pip install --no-cache-dir --root-user-action=ignore .
CMD ["supervisord", "-n", "-c", "conf/cluster.conf"]
