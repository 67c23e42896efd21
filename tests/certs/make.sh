#!/bin/sh
# Makes the test certificates of tests/test_tls.py (self-signed, EC P-256, valid 2000-2100); run from any directory.
#   server: the scripted CTI server's (CN=localhost, IP:127.0.0.1); the tools trust it with --tls-ca server.pem
#   tool:   the tool's own, for --listen-tls and STARTTLS interception (--cert/--key); the scripted client trusts it
#   other:  trusted by nobody, and for another name (other.invalid): verification failures
#   encrypted: tool.key under a passphrase
set -e
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
certificate() {
    name=$1 cn=$2 san=$3
    cat > "$work/$name.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $work/index.txt
new_certs_dir = $work
serial = $work/serial
default_md = sha256
policy = any
email_in_dn = no
copy_extensions = none
[any]
commonName = supplied
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $cn
[ext]
subjectAltName = $san
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature,keyCertSign
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
    : > "$work/index.txt"
    echo 01 > "$work/serial"
    openssl ecparam -name prime256v1 -genkey -noout -out "$work/ec.key"
    openssl pkcs8 -topk8 -nocrypt -in "$work/ec.key" -out "$name.key"
    openssl req -new -config "$work/$name.cnf" -key "$name.key" -out "$work/$name.csr"
    openssl ca -batch -notext -config "$work/$name.cnf" -selfsign -keyfile "$name.key" -in "$work/$name.csr" \
        -extensions ext -startdate 20000101000000Z -enddate 21000101000000Z -out "$name.pem" 2>/dev/null
}
certificate server localhost 'IP:127.0.0.1,DNS:localhost'
certificate tool 'cti-proxy test tool' 'IP:127.0.0.1,DNS:localhost'
certificate other other.invalid 'DNS:other.invalid'
# encrypted: tool.key under a passphrase ('test'), which the tools refuse rather than ask for
openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:test -in tool.key -out encrypted.key
