#!/usr/bin/env bash
# Packs what `streamrec up` needs from this machine into one folder, for running the stack
# benchmarks on a machine that has Python and torch but no Java, Maven or Redis (the lent GPU
# machines): a jlink'ed Java 17 runtime, the broker's jars (resolved here by Maven; natives
# for other platforms dropped), Debian's redis-server with its libraries, and a stand-in
# for `mvn` that writes the classpath from the packed jars.
#
#   benchmarks/portable_stack.sh OUT_DIR      # here, after `streamrec up` ran once
#   (copy OUT_DIR to the other machine, then there:)
#   source OUT_DIR/env.sh && python -m benchmarks.content_bench --device cuda ...
set -euo pipefail
out=$(realpath -m "${1:?usage: benchmarks/portable_stack.sh OUT_DIR}")
repo=$(cd "$(dirname "$0")/.." && pwd)
cp_file=$(ls "$repo"/.streamrec/kafka/classpath-*.txt 2>/dev/null | head -1) ||
  { echo "run 'streamrec up' once first (it resolves the broker's jars)" >&2; exit 1; }
java_home=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
mkdir -p "$out/jars" "$out/redis/lib"

# java.desktop is needed: log4j2 uses java.beans.
rm -rf "$out/jre"
"$java_home/bin/jlink" --add-modules java.base,java.desktop,java.instrument,java.logging,\
java.management,java.naming,java.net.http,java.security.jgss,java.security.sasl,java.sql,\
java.xml,jdk.crypto.ec,jdk.management,jdk.unsupported,jdk.zipfs,jdk.naming.dns \
  --strip-debug --no-man-pages --no-header-files --output "$out/jre"

tr ':' '\n' <"$cp_file" | xargs -I{} cp {} "$out/jars/"
for jar in "$out"/jars/{zstd-jni,snappy-java,lz4-java}-*.jar; do
  others=$(unzip -Z1 "$jar" | grep -E '\.(so|dll|dylib|jnilib)$' |
    grep -v -E 'linux/(amd64|x86_64)|Linux/x86_64' || true)
  [ -z "$others" ] || zip -q -d "$jar" $others
done

cp "$(command -v redis-server)" "$out/redis/"
ldd "$out/redis/redis-server" | awk '/=> \//{print $3}' |
  grep -v -E '/lib(c|m|pthread|dl|rt)\.so|ld-linux' | xargs -I{} cp -L {} "$out/redis/lib/"
cat >"$out/redis/redis-server.sh" <<'SH'
#!/bin/sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/lib" exec "$here/redis-server" "$@"
SH
cat >"$out/mvn" <<'SH'
#!/bin/sh
# Stands in for `mvn dependency:build-classpath`: the classpath of the packed jars.
for a in "$@"; do case "$a" in -Dmdep.outputFile=*) f="${a#-Dmdep.outputFile=}" ;; esac; done
here=$(dirname "$(readlink -f "$0")")
ls -1 "$here"/jars/*.jar | tr '\n' ':' | sed 's/:$//' >"$f"
SH
cat >"$out/env.sh" <<'SH'
here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
export STREAMREC_STACK__JAVA="$here/jre/bin/java" STREAMREC_STACK__MVN="$here/mvn" \
  STREAMREC_STACK__REDIS_SERVER="$here/redis/redis-server.sh"
SH
chmod +x "$out/mvn" "$out/redis/redis-server.sh"
du -sh "$out"
