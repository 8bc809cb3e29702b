# One container per graded submission: the recommended way to grade a class where marks matter
# (docs/teaching.md, "Threat model"). The submission runs as an unprivileged user, with no
# network, a read-only file system except a small /tmp, and the course installed read-only, so
# nothing it does outlives the container or reaches another learner's files or the grades.
#
#   docker build -f docker/grader.Dockerfile -t int4lab-grader .
#   docker run --rm --network none --read-only --tmpfs /tmp:size=512m \
#     --cpus 2 --memory 6g --pids-limit 256 --security-opt no-new-privileges \
#     -v "$PWD/submissions/alice:/submission:ro" -v "$PWD/grades/alice:/out" \
#     int4lab-grader --hidden --json /out/grades.json --junit /out/grades.xml
#
# (On a GPU runner add --gpus all and start FROM an image whose torch has CUDA.)
FROM python:3.11-slim

# CPU-only torch first: a bare `torch` requirement would pull a multi-GB CUDA build
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY . /opt/int4lab
RUN pip install --no-cache-dir /opt/int4lab \
    && python -m int4lab.grading.manifest --check \
    && useradd --create-home --uid 10001 grader

USER grader
ENV INT4LAB_HOME=/tmp/int4lab HOME=/tmp
WORKDIR /tmp
ENTRYPOINT ["int4lab", "grade", "/submission"]
