#!/usr/bin/env python3
"""Regenerates builtin-cases.toml: a positive and a negative case for every built-in rule.

Secrets are random (fixed seed) and made up. `<>` is spliced into every positive so that the
repository itself holds no well-formed token (the unit test removes it before scanning); rerun
`bot-bottle scan .` after editing to check that nothing in the repository matches.
"""
import os
import random, string, base64, json
random.seed(7)
A=string.ascii_letters+string.digits
def r(n, cs=A): return ''.join(random.choice(cs) for _ in range(n))
HEX='0123456789abcdef'
B32='QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L'
def sp(tok, k=3):
    # splice marker so the repository itself holds no well-formed token
    return tok[:k]+'<>'+tok[k:]
pem_body='\\n'.join(r(64, A+'+/') for _ in range(6))
pem_lines='\n'.join(r(64, A+'+/') for _ in range(6))
jwt = 'eyJhbGciOiJIUzI1NiJ9.'+'eyJ'+r(40,A+'_-')+'.'+r(43,A+'_-')
cases = {
 'aws-access-key-id': ([f'aws_access_key_id = {sp("AKIA"+r(16,string.ascii_uppercase+"234567"))}'],
                       ['aws_access_key_id = AKIAIOSFODNN7EXAMPLE', 'AKIA is the prefix of long-term keys', 'AKIAAAAAAAAAAAAAAAAA']),
 'aws-secret-access-key': ([f'aws_secret_access_key = {sp(r(40,A+"/+"),4)}', f'"SecretAccessKey": "{sp(r(40,A+"/+"),4)}"'],
                       ['aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}']),
 'gcp-api-key': ([f'key: "{sp("AIza"+r(35,A+"_-"))}"'], ['AIzaSyShort', 'AIza' + 'a'*35]),
 'gcp-service-account-key': ([f'{{"type": "service_account", "project_id": "p", "private_key_id": "{r(40,HEX)}", "private_key": "{sp("-----BEGIN PRIVATE KEY-----",6)}\\n{pem_body}\\n-----END PRIVATE KEY-----\\n", "client_email": "x@p.iam.gserviceaccount.com"}}'],
                       ['{"type": "authorized_user", "client_id": "x", "refresh_token": "see docs"}']),
 'azure-storage-account-key': ([f'DefaultEndpointsProtocol=https;AccountName=acct;{sp("AccountKey",7)}={r(86,A+"+/")}==;EndpointSuffix=core.windows.net'],
                       ['DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=<your-key>;EndpointSuffix=core.windows.net']),
 'digitalocean-token': ([sp('dop_v1_'+r(64,HEX))], ['dop_v1_tooshort']),
 'github-pat': ([f'GITHUB_TOKEN={sp("ghp_"+r(36))}'], ['ghp_ is the classic prefix', 'ghp_'+'x'*36]),
 'github-fine-grained-pat': ([sp('github_pat_'+r(22)+'_'+r(59))], ['github_pat_'+r(10)]),
 'github-oauth-token': ([f'token: {sp("gho_"+r(36))}'], ['gho_'+r(20)]),
 'github-app-token': ([sp('ghs_'+r(36)), sp('ghu_'+r(36)), sp('ghr_'+r(76))], ['ghs_'+r(12)]),
 'gitlab-pat': ([f'GITLAB_TOKEN={sp("glpat-"+r(20,A+"_-"))}'], ['glpat-xxxxxxxxxxxxxxxxxxxx', 'glpat-short']),
 'gitlab-token': ([sp('gldt-'+r(20,A+"_-")), sp('glrt-'+r(24,A+"_-")), sp('GR1348941'+r(20,A+"_-"))], ['gldt-short', 'glrt-xxxxxxxxxxxxxxxxxxxxxxxx']),
 'npm-access-token': ([f'NPM_TOKEN={sp("npm_"+r(36))}'], ['npm_config_cache=/tmp/x', 'npm_'+'a'*36]),
 'npmrc-auth-token': ([f'//registry.npmjs.org/:{sp("_authToken",4)}={r(36,A+"-")}'], ['//registry.npmjs.org/:_authToken=${NPM_TOKEN}']),
 'pypi-token': ([sp('pypi-AgEIcHlwaS5vcmc'+r(70,A+"_-"),6)], ['pypi-AgEIcHlwaS5vcmc', 'pip install pypi-simple']),
 'dockerhub-pat': ([sp('dckr_pat_'+r(27,A+"_-"))], ['dckr_pat_short']),
 'huggingface-token': ([f'HF_TOKEN={sp("hf_"+r(34,string.ascii_letters),2)}'], ['hf_hub_download(repo_id="x")', 'hf_'+'a'*34]),
 'slack-bot-token': ([sp('xoxb-'+r(12,string.digits)+'-'+r(13,string.digits)+'-'+r(24))], ['xoxb-not-a-token']),
 'slack-user-token': ([sp('xoxp-'+r(11,string.digits)+'-'+r(11,string.digits)+'-'+r(12,string.digits)+'-'+r(32,HEX))], ['xoxp-123']),
 'slack-app-token': ([sp('xapp-1-A'+r(10,string.ascii_uppercase+string.digits)+'-'+r(13,string.digits)+'-'+r(64,HEX))], ['xapp-1-short']),
 'slack-legacy-token': ([sp('xoxs-'+r(10,string.digits)+'-'+r(11,string.digits)+'-'+r(32,HEX))], ['xoxs-']),
 'slack-webhook-url': ([sp('https://hooks.slack.com/services/T'+r(8,string.ascii_uppercase+string.digits)+'/B'+r(8,string.ascii_uppercase+string.digits)+'/'+r(24), 12)],
                       ['https://hooks.slack.com/services/T000/B000/XXXX']),
 'discord-webhook-url': ([sp('https://discord.com/api/webhooks/'+r(18,string.digits)+'/'+r(68,A+'_-'),12)], ['https://discord.com/api/webhooks/123/abc']),
 'telegram-bot-token': ([f'bot_token = "{sp(r(9,string.digits)+":AA"+r(33,A+"_-"),4)}"'], ['ratio 123456789:AA is fine']),
 'stripe-secret-key': ([sp('sk_live_'+r(24)), sp('rk_test_'+r(24))], ['pk_live_'+r(24), 'sk_live_short']),
 'stripe-webhook-secret': ([sp('whsec_'+r(32))], ['whsec_short']),
 'sendgrid-api-key': ([sp('SG.'+r(22,A+'_-')+'.'+r(43,A+'_-'),2)], ['SG.short.value']),
 'twilio-api-key': ([sp('SK'+r(32,HEX),2)], ['SK'+'0'*32, 'SKIP_TESTS=1']),
 'mailgun-api-key': ([f'MAILGUN_KEY={sp("key-"+r(32,HEX))}'], ['key-'+'0'*32, 'key-value pairs']),
 'mailchimp-api-key': ([sp(r(32,HEX)+'-us6', 5)], ['0'*32+'-us6', 'en-us']),
 'shopify-token': ([sp('shpat_'+r(32,HEX))], ['shpat_short']),
 'hashicorp-vault-token': ([sp('hvs.'+r(95,A+'_-'),2)], ['hvs.short']),
 'terraform-cloud-token': ([sp(r(14,string.ascii_lowercase+string.digits)+'.atlasv1.'+r(67,A+'_-'),5)], ['x.atlasv1.y']),
 'age-secret-key': ([sp('AGE-SECRET-KEY-1'+r(58,B32),6)], ['AGE-SECRET-KEY-1']),
 'openai-api-key': ([f'OPENAI_API_KEY={sp("sk-"+r(20)+"T3BlbkFJ"+r(20),2)}', sp('sk-proj-'+r(60,A+'_-')+'T3BlbkFJ'+r(60,A+'_-'),2)], ['sk-'+r(48), 'T3BlbkFJ alone']),
 'anthropic-api-key': ([f'ANTHROPIC_API_KEY={sp("sk-ant-api03-"+r(93,A+"_-")+"AA",5)}'], ['sk-ant-api03-short']),
 'private-key': ([sp('-----BEGIN RSA PRIVATE KEY-----',6)+'\n'+pem_lines+'\n-----END RSA PRIVATE KEY-----',
                  sp('-----BEGIN OPENSSH PRIVATE KEY-----',6)+'\n'+pem_lines+'\n-----END OPENSSH PRIVATE KEY-----'],
                 ['-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----', '-----BEGIN CERTIFICATE-----\n'+pem_lines+'\n-----END CERTIFICATE-----']),
 'jwt': ([f'Authorization: Bearer {sp(jwt)}'], ['eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c', 'eyJ alone']),
 'database-url-password': ([f'DATABASE_URL={sp("postgres",4)}://app:{r(16)}@db.internal:5432/app', f'mongo<>db+srv://svc:{r(20)}@cluster0.mongodb.net/x'],
                           ['DATABASE_URL=postgres://postgres:postgres@localhost/app', 'postgres://user:${DB_PASSWORD}@db/app', 'postgres://localhost:5432/app']),
 'generic-secret': ([f'auth_{sp("token",3)} = "{r(14)}9"',
                     # a dotted name whose keyword is `access.key` (hand-written: no draw)
                     'storage.access.k<>ey = "Qm7x<>V2Lk9Rt4Wz8Np3H"',
                     f'client_{sp("secret",3)}: {r(30)}', f'"api_{sp("key",2)}": "{r(32,HEX)}"'],
                    ['password = get_password(user)', 'token = self.next_token', 'secret: "changeme123456"', 'api_key = os.environ["API_KEY"]', 'password: ${{ secrets.DB_PASSWORD }}', 'token_count = 1234567890']),
}

LOW=string.ascii_lowercase
cases.update({
 'adafruit-io-key': ([f'IO_KEY = "{sp("aio_"+r(28))}"'], ['aio_short', 'aio_'+'a'*28]),
 'atlassian-api-token': ([sp('ATATT3xFfGF0'+r(180,A+'_-')+'='+r(8,HEX.upper()),6)], ['ATATT3 prefix only']),
 'azure-devops-pat': ([f'azure_devops_pat = "{sp(r(52,LOW+"234567"),4)}"', sp(r(52)+'JQQJ99'+r(18)+'AZDO'+r(4),8)], ['azure_devops_pat = "${ADO_PAT}"', 'devops token = see wiki']),
 'bitbucket-app-password': ([f'https://u:{sp("ATBB"+r(32))}@bitbucket.org/x/y.git'], ['ATBB short']),
 'cratesio-token': ([f'CARGO_REGISTRY_TOKEN={sp("cio"+r(32),2)}'], ['cio'+'a'*32, 'precious']),
 'databricks-token': ([sp('dapi'+r(32,HEX))], ['dapi'+'0'*32, 'dapi_version']),
 'dependency-track-api-key': ([sp('odt_'+r(32))], ['odt_short']),
 'doppler-token': ([sp('dp.st.prd.'+r(43)), sp('dp.pt.'+r(43))], ['dp.st.short']),
 'facebook-access-token': ([sp('EAACEdEose0cBA'+r(120))], ['EAAC short']),
 'facebook-app-secret': ([f'facebook_app_secret = "{sp(r(32,HEX),5)}"'], ['facebook_app_secret = "${FB_SECRET}"', 'facebook_app_id = "1234567890"']),
 'grafana-token': ([sp('glsa_'+r(32)+'_'+r(8,HEX)), sp('glc_'+r(60,A+'+/'))], ['glsa_short', 'glc_x']),
 'jina-api-key': ([sp('jina_'+r(32,HEX)+r(30))], ['jina_ai']),
 'kubernetes-bootstrap-token': ([f'--tls-bootstrap-token {sp(r(6,LOW+string.digits)+"."+r(16,LOW+string.digits),3)}'], ['bootstrap token: see kubeadm docs']),
 'linear-api-key': ([sp('lin_api_'+r(40))], ['lin_api_short']),
 'microsoft-teams-webhook': ([sp('https://acme.webhook.office.com/webhookb2/'+'-'.join(r(n,HEX) for n in (8,4,4,4,12))+'@'+'-'.join(r(n,HEX) for n in (8,4,4,4,12))+'/IncomingWebhook/'+r(32,HEX)+'/'+'-'.join(r(n,HEX) for n in (8,4,4,4,12)),12)], ['https://acme.webhook.office.com/webhookb2/']),
 'new-relic-key': ([sp('NRAK-'+r(27,string.ascii_uppercase+string.digits)), f'license_key: {sp(r(36,LOW+string.digits)+"NRAL",5)}'], ['NRAK-short', 'license_key: a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8NRAL']),
 'nuget-api-key': ([sp('oy2'+r(43,LOW+string.digits),2)], ['oy2short']),
 'okta-api-token': ([f'OKTA_API_TOKEN = "{sp("00"+r(40,A+"_-"),2)}"', f'Authorization: SSWS {sp("00"+r(40,A+"_-"),2)}'], ['okta_api_token = "${OKTA_TOKEN}"']),
 'postman-api-key': ([sp('PMAK-'+r(24,HEX)+'-'+r(34,HEX))], ['PMAK-short']),
 'rubygems-api-key': ([sp('rubygems_'+r(48,HEX))], ['rubygems_version']),
 'salesforce-access-token': ([sp('00D'+r(15)+'!'+r(96,A+'._'),2)], ['00D short']),
 'sonarqube-token': ([sp('sqp_'+r(40,HEX)), f'-Dsonar.login={sp(r(40,HEX),3)}'], ['sonar.login=${SONAR_TOKEN}']),
 'sourcegraph-token': ([sp('sgp_'+r(16,HEX)+'_'+r(40,HEX))], ['sgp_short']),
 'square-token': ([sp('sq0atp-'+r(22,A+'_-')), sp('EAAA'+r(60,A+'_-'))], ['sq0atp-short']),
 'tavily-api-key': ([sp('tvly-'+r(32))], ['tvly-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx']),
 'thingsboard-access-token': ([sp('https://thingsboard.cloud/api/v1/'+r(20,LOW+string.digits)+'/telemetry',14)], ['https://thingsboard.cloud/api/v1/devices']),
 'truenas-api-key': ([f'{{"method": "auth.login_with_api_key", "params": ["{sp("7-"+r(64),3)}"]}}'], ['auth.login_with_api_key takes a key']),
 'twitch-stream-key': ([sp('live_'+r(9,string.digits)+'_'+r(30))], ['live_stream_enabled']),
 'vault-token-legacy': ([f'VAULT_TOKEN="{sp("s."+r(24),1)}"', f'Unseal Key 1: {sp(r(43,A+"+/")+"=",4)}'], ['vault token: see docs', 'Unseal Key 1: <redacted>']),
 'wireguard-key': ([f'PrivateKey = {sp(r(42,A+"+/")+"A=",4)}'], ['PrivateKey = <server private key>']),
 'private-key-base64': ([sp('LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb2dJQkFBS0NBUUVB'+r(120,A+'+/'),6)], ['LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSURYVENDQWtXZ0F3SUJBZ0lKQUt'+r(100,A+'+/')]),
 'password-hash': ([sp('$2b$12$'+r(53,A+'./'),4), sp('$6$'+r(8,A+'./')+'$'+r(86,A+'./'),3), sp('$krb5asrep$23$'+r(32,HEX)+'$'+r(96,HEX),5)], ['$2b$ prefix only', 'cost $6$ and $5$ each']),
 'netrc-credentials': ([f'machine api.example.net login deploy pass<>word {r(20)}'], ['machine learning login page password reset']),
 'psexec-credentials': ([f'Ps<>Exec.exe \\\\host01 -u CORP\\svc -p {r(12)} cmd'], ['psexec \\\\host -u admin -p $Password cmd']),
 'powercli-credentials': ([f'Connect-VI<>Server -Server vc01 -User admin@vsphere.local -Password {r(12)}'], ['Connect-VIServer -Server vc01 -User $user -Password $pass']),
 'dotnet-credentials': ([f'new NetworkCredential("svc@corp.example", "{sp(r(14),3)}")'], ['new NetworkCredential(user, pass)']),
 'generic-bearer-token': ([f'GET /v1/me HTTP/1.1\nAuthorization: Bearer {sp(r(40,A+"-_"),4)}'], ['-H "Authorization: Bearer $TOKEN"', 'Authorization: Bearer <token>']),
 'generic-basic-auth': ([f'Authorization: Basic {sp(base64.b64encode(("svc:"+r(16)).encode()).decode(),4)}'], ['Authorization: Basic <credentials>']),
 'generic-cli-credentials': ([f'cu<>rl -u admin:{r(16)} https://ci.example.net/api'], ['curl -u admin:$PASSWORD https://ci.example.net/api', 'curl -u "$USER:$PASS" https://x']),
 'generic-connection-string-password': ([f'Server=db01;Database=app;User Id=app;{sp("Password",4)}={r(16)};'], ['Server=db01;Database=app;User Id=app;Password=${DB_PASSWORD};', 'User ID=myUsername;Password=myPassword;']),
 'generic-config-password': ([f'<add key="SmtpPassword" value="{sp(r(14),3)}" />'], ['<add key="SmtpPassword" value="" />', '<add key="SmtpHost" value="smtp.example.net" />']),
 'generic-password': ([f'{sp("password",4)} = "{r(10,string.ascii_letters)}"', f"DB_{sp('PASS',2)}WORD='{r(12)}'", f'REACT_APP_AUTH_{sp("PASS",2)}={r(9,string.ascii_lowercase)}'],
                      ['password = get_password(user)', 'password: str', 'password = "changeme"', 'password: ${{ secrets.DB_PASSWORD }}', 'password = request.form["password"]', 'PASSWORD = "DB_PASSWORD"', 'label = "Password:"', 'bypass = "aaaaaaaa"']),
})

# Rules added with the value judge (issue 15 \u00a72); appended so the cases above keep their values.
LOW = string.ascii_lowercase + string.digits
cases.update({
 'azure-shared-access-key': ([f'HostName=hub01.azure-devices.net;SharedAccessKeyName=iothubowner;{sp("SharedAccessKey",6)}={r(43,A+"+/")}='],
                      ['HostName=hub01.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=<key>']),
 'azure-app-configuration-secret': ([f'Endpoint=https://appcs-demo.azconfig.io;Id=ab1c-l0-s0:{r(20)};{sp("Secret",3)}={r(43,A+"+/")}='],
                      ['Endpoint=https://appcs-demo.azconfig.io;Id=ab1c-l0-s0:x;Secret=<secret>']),
 'artifactory-api-key': ([f'--apikey={sp("AKCp"+r(69))}'], ['AKCp is the prefix of Artifactory API keys']),
 'codeclimate-reporter-id': ([f'{sp("CC_TEST_REPORTER_ID",7)}: {r(64,HEX)}'], ['CC_TEST_REPORTER_ID: ${{ secrets.CC_TEST_REPORTER_ID }}']),
 'django-insecure-secret-key': ([f"SECRET_KEY = '{sp('django-insecure-',7)}{r(50,A+'!@#%^&*(-_=+)')}'"], ["SECRET_KEY = 'django-insecure-'", 'grep django-insecure- settings.py']),
 'dropbox-short-lived-token': ([f'"access_token": "{sp("sl."+r(138,A+"_-"),2)}"'], ['"access_token": "sl.short"']),
 'figma-token': ([f"--header='X-Figma-{sp('Token',3)}: 1394-{r(8,HEX)}-{r(4,HEX)}-{r(4,HEX)}-{r(4,HEX)}-{r(12,HEX)}'", f'FIGMA_TOKEN={sp("figd_"+r(40,A+"_-"),4)}'],
                      ['X-Figma-Token: <your token>']),
 'google-oauth-access-token': ([f"access_token: '{sp('ya29.'+r(120,A+'_-'),4)}'"], ['ya29.short', 'tokens start with ya29.']),
 'jenkins-crumb': ([f"-H '{sp('Jenkins-Crumb',8)}:{r(32,HEX)}'"], ['-H "Jenkins-Crumb:$CRUMB"']),
 'jenkins-initial-admin-password': ([f'Please use the following password to proceed to {sp("installation",6)}:\n\n{r(32,HEX)}\n'],
                      ['Please use the following password to proceed to installation:\n\n<see the log>\n']),
 'kubernetes-bootstrap-token-secret': ([f'{sp("token-secret",7)}: {r(16,LOW)}'], ['token-secret: ""', 'token-secret: <secret>']),
 'new-relic-license-key': ([f'{sp("license_key",6)}: {r(40,HEX)}'], ['license_key: <%= ENV["NEW_RELIC_LICENSE_KEY"] %>', 'license_key: 0000000000000000000000000000000000000000']),
 'generic-url-query-token': ([f'curl "https://api.example.net/v1/devices?{sp("access_token",8)}={r(40,HEX)}"', f'fetch(`https://api.example.net/earth?{sp("api_key",4)}={r(40)}`)'],
                      ['https://api.example.net/v1?token=YOUR_API_TOKEN', 'https://api.example.net/v1?token=${TOKEN}&x=1', '?key=value&other=1', 'https://api.example.net/v1?access_token=xxxxxxxxxxxxxxxxxxxx']),
 'generic-password-in-prose': ([f"The default {sp('password',4)} is '{r(10)}'", f'Ensure the {sp("password",4)} for user "svc" is "{r(9,string.ascii_lowercase)}".'],
                      ["The password is 'password'", 'the password is "********"', 'The password is "<the one you chose>"']),
})
# Look-alikes of secrets that assignment rules judge by their value: prose, references,
# placeholders, e-mail addresses.
cases['generic-password'][0].extend([f'{sp("password",4)} = "s{r(4,string.ascii_lowercase)}$ecret"', f'if {sp("password",4)} == "{r(9)}":', f'$user = \\"mg1021\\"; ${sp("password",4)} = \\"{r(8,string.ascii_lowercase)}\\";'])
cases['generic-password'][1].extend([
 'password_hint = "The name of your first pet"',
 '"password_error": "Password must be at least 8 characters long"',
 'PASSWORD_HELP = "Enter the password you chose at sign-up."',
 'password_label: "New password (again)"',
 'password = "${DB_PASSWORD}"',
 'password: "{{ .Values.db.password }}"',
 'password = "%(db_password)s"',
 'password = "<your password>"',
 'password = "xxxxxxxxxxxx"',
 'password = "anonymous@example.com"',
 'if password == "":',
 # RFC 7617's example password, spelled as code spells it; one built on it is a secret.
 "password = 'open sesame'",
 'password = open_sesame',
])
cases['generic-password'][0].append(f'{sp("password",4)} = "open_sesame_7Gk2"')
# Code, not values: a type annotation, an identifier assigned in a statement, names about
# passing something on; a bare word or random mixed case ending a statement is still a value.
cases['generic-password'][1].extend([
 'pub static kSecClassGenericPassword: CFStringRef;',
 'self.max_passes = max_passes;',
 'const DEVICE_PASSCODE = kSecAccessControlDevicePasscode;',
 'let passes = last_modified',
 "cargo rustc -- -C passes='sancov-module'",
 'self.pass_through_unaccepted = enabled;',
])
cases['generic-password'][0].extend([f'${sp("password",4)} = goodspec;', f'{sp("password",4)} = xK9mP2qLw;'])
# MongoDB's documentation's example password; one built on it is a secret.
cases['database-url-password'][1].append('mongodb://myDatabaseUser:D1fficultP%40ssw0rd@mongodb0.example.com:27017/?authSource=admin')
cases['database-url-password'][0].append('mongo<>db://myDatabaseUser:D1fficultP%40ssw0rd2024@mongodb0.example.com:27017/')
cases['generic-secret'][1].extend([
 'client_secret: "<your client secret>"',
 'secret = "--------------------"',
])

# Rules for the kinds of gitleaks' default rules (issue 23); appended so the cases above keep
# their values. Each value is made up in the vendor's documented shape.
UP = string.ascii_uppercase + string.digits
LD = string.ascii_lowercase + string.digits
def uuid(): return '-'.join(r(n, HEX) for n in (8, 4, 4, 4, 12))
def ctx_case(name, value, k=4):
    return f'{name} = "{sp(value, k)}"'
cases.update({
 'onepassword-service-account-token': ([sp('ops_eyJ' + r(250, A + '+/'), 5)], ['ops_eyJ short', 'ops_eyJ' + 'A' * 250]),
 'onepassword-secret-key': ([sp('A3-' + '-'.join(r(n, UP) for n in (6, 6, 5, 5, 5, 5)), 4)], ['A3-AAAAAA-AAAAAA-AAAAA-AAAAA-AAAAA-AAAAA', 'an A3-size sheet']),
 'adobe-client-secret': ([f'ADOBE_CLIENT_SECRET={sp("p8e-" + r(32), 4)}'], ['p8e-short']),
 'airtable-token': ([sp('pat' + r(14) + '.' + r(64, HEX), 4)], ['pattern.' + 'a' * 64, 'path' + r(14) + '.txt']),
 'alibaba-access-key-id': ([f'access_key_id: {sp("LTAI" + r(20), 5)}'], ['LTAIxxxxxxxxxxxxxxxxxxxx', 'LTAI']),
 'aws-bedrock-api-key': ([sp('ABSKQmVkcm9ja0FQSUtleS' + r(120, A + '+/'), 6), sp('bedrock-api-key-' + 'YmVkcm9jay5hbWF6b25hd3MuY29t' + r(200, A + '+/'), 9)], ['ABSKQmVkcm9ja0FQSUtleS short', 'bedrock-api-key-example']),
 'azure-ad-client-secret': ([f'client_secret: {sp(r(3) + "8Q~" + r(34, A + "_~.-"), 2)}'], ['a8Q~ short', 'abc8Q~' + 'a' * 34]),
 'clickhouse-cloud-api-secret': ([sp('4b1d' + r(38), 5)], ['4b1d' + 'a' * 38, '4b1d short']),
 'clojars-deploy-token': ([sp('CLOJARS_' + r(60, LD), 5)], ['CLOJARS_USERNAME', 'CLOJARS_' + 'a' * 60]),
 'cloudflare-origin-ca-key': ([sp('v1.0-' + r(24, HEX) + '-' + r(146, HEX), 6)], ['v1.0-beta', 'v1.0-' + '0' * 24 + '-' + '0' * 146]),
 'defined-networking-api-token': ([sp('dnkey-' + r(26, LD) + '-' + r(52, LD), 7)], ['dnkey-short']),
 'dropbox-long-lived-token': ([f'DROPBOX_TOKEN={sp(r(11) + "AAAAAAAAAA" + r(43, A + "_-"), 5)}'], ['AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA']),
 'duffel-api-token': ([sp('duffel_test_' + r(43, A + '_-'), 7)], ['duffel_test_short']),
 'dynatrace-api-token': ([sp('dt0c01.' + r(24, UP) + '.' + r(64, UP), 6)], ['dt0c01.short']),
 'easypost-api-key': ([sp('EZAK' + r(54), 3), sp('EZTK' + r(54), 3)], ['EZAK' + 'a' * 54, 'EZAK short']),
 'flutterwave-key': ([sp('FLWSECK_TEST-' + r(32, 'abcdefgh0123456789') + '-X', 6), sp('FLWPUBK-' + r(32, 'abcdefgh0123456789') + '-X', 6), sp('FLWSECK_TEST' + r(12, 'abcdefgh0123456789'), 6)], ['FLWSECK_TEST-short-X']),
 'flyio-token': ([sp('fo1_' + r(43, A + '_-'), 3), f'FLY_API_TOKEN="FlyV1 {sp("fm2_" + r(160, A + "+/"), 3)}"'], ['fo1_short', 'fm2_short']),
 'frameio-api-token': ([sp('fio-u-' + r(64, A + '_-'), 5)], ['fio-u-short']),
 'harness-token': ([sp('pat.' + r(22, A + '_-') + '.' + r(24, HEX) + '.' + r(20), 4)], ['pat.short.token', 'sat.' + 'a' * 22 + '.' + '0' * 24 + '.' + 'a' * 20]),
 'infracost-api-key': ([sp('ico-' + r(32), 4)], ['ico-short', 'ico-' + 'a' * 32]),
 'intra42-client-secret': ([sp('s-s4t2ud-' + r(64, HEX), 6)], ['s-s4t2ud-short']),
 'mapbox-secret-token': ([sp('sk.eyJ1Ijoi' + r(60, A + '_-') + '.' + r(22, A + '_-'), 5)], ['sk.eyJ short', 'pk.eyJ1Ijoi' + r(60, A + '_-') + '.' + r(22, A + '_-')]),
 'maxmind-license-key': ([f'MAXMIND_LICENSE_KEY={sp(r(6) + "_" + r(29) + "_mmk", 5)}'], ['abcdef_short_mmk']),
 'notion-token': ([sp('ntn_' + r(11, string.digits) + r(35), 3), ctx_case('NOTION_TOKEN', 'secret_' + r(43), 6)], ['ntn_short', 'NOTION_TOKEN = "secret_placeholder"']),
 'octopus-deploy-api-key': ([f'OCTOPUS_API_KEY={sp("API-" + r(26, UP), 4)}'], ['API-AAAAAAAAAAAAAAAAAAAAAAAAAA', 'API-KEY']),
 'openshift-user-token': ([f'oc login --token={sp("sha256~" + r(43, A + "_-"), 6)}'], ['sha256~short']),
 'perplexity-api-key': ([sp('pplx-' + r(48), 4)], ['pplx-short']),
 'planetscale-token': ([sp('pscale_tkn_' + r(43, A + '_-'), 7), sp('pscale_pw_' + r(43, A + '_-'), 7)], ['pscale_tkn_short']),
 'prefect-api-key': ([sp('pnu_' + r(36), 3)], ['pnu_short', 'pnu_' + 'a' * 36]),
 'pulumi-access-token': ([sp('pul-' + r(40, HEX), 3)], ['pul-short', 'pul-' + '0' * 40]),
 'readme-api-key': ([sp('rdme_' + r(70, LD), 4)], ['rdme_short']),
 'scalingo-api-token': ([sp('tk-us-' + r(48, A + '_-'), 4)], ['tk-us-short']),
 'brevo-api-key': ([sp('xkeysib-' + r(64, HEX) + '-' + r(16), 5)], ['xkeysib-short']),
 'sentry-token': ([sp('sntryu_' + r(64, HEX), 5), sp('sntrys_eyJpYXQiOjE3' + r(80, A + '+/'), 5), ctx_case('SENTRY_AUTH_TOKEN', r(64, HEX), 6)], ['sntryu_short', 'SENTRY_AUTH_TOKEN = "${SENTRY_TOKEN}"']),
 'settlemint-token': ([sp('sm_pat_' + r(16), 4)], ['sm_pat_short', 'sm_pat_aaaaaaaaaaaaaaaa']),
 'shippo-api-token': ([sp('shippo_live_' + r(40, HEX), 7)], ['shippo_live_short']),
 'sidekiq-credentials': ([f'BUNDLE_ENTERPRISE__{sp("CONTRIBSYS", 4)}__COM={r(8, HEX)}:{r(8, HEX)}', f'source "https://{r(8, HEX)}:{r(8, HEX)}@enterprise.{sp("contribsys", 4)}.com/"'], ['BUNDLE_ENTERPRISE__CONTRIBSYS__COM=${SIDEKIQ_CREDS}', 'https://enterprise.contribsys.com/']),
 'twitter-bearer-token': ([f'TWITTER_BEARER_TOKEN={sp("A" * 21 + r(90, A + "%"), 12)}'], ['A' * 100]),
 'typeform-api-token': ([sp('tfp_' + r(59, A + '_-'), 3)], ['tfp_short']),
 'yandex-key': ([sp('AQVN' + r(36, A + '_-'), 3), sp('t1.' + r(40, A + '_-') + '.' + r(86, A + '_-'), 2)], ['AQVN short', 't1.micro']),
 'heroku-api-key': ([sp('HRKU-AA' + r(58, A + '_-'), 4), ctx_case('HEROKU_API_KEY', uuid(), 5)], ['HRKU-AA short', 'HEROKU_API_KEY = "${HEROKU_API_KEY}"']),
 'hubspot-token': ([sp('pat-na1-' + uuid(), 6), ctx_case('HUBSPOT_API_KEY', uuid(), 5)], ['pat-na1-short', 'HUBSPOT_API_KEY = "<key>"']),
 'discord-token': ([ctx_case('DISCORD_BOT_TOKEN', 'M' + r(25) + '.' + r(6, A + '_-') + '.' + r(38, A + '_-'), 5), ctx_case('discord_client_secret', r(32, A + '_-'), 5)], ['DISCORD_BOT_TOKEN = "${DISCORD_TOKEN}"', 'discord_client_secret = "' + 'a' * 32 + '"']),
 'twitter-credentials': ([ctx_case('TWITTER_ACCESS_TOKEN', r(19, string.digits) + '-' + r(31), 6), ctx_case('twitter_api_secret', r(50), 6)], ['TWITTER_API_KEY = "${TWITTER_API_KEY}"', 'twitter_api_key = "' + 'a' * 25 + '"']),
 'alibaba-secret-key': ([ctx_case('ALIBABA_CLOUD_ACCESS_KEY_SECRET', r(30), 5)], ['ALIBABA_CLOUD_ACCESS_KEY_SECRET = "${SECRET}"', 'alibaba_secret = "' + 'a' * 30 + '"']),
})
CONTEXT_CASES = [
 ('cloudflare-api-key', 'CLOUDFLARE_API_TOKEN', lambda: r(40, A + '_-')),
 ('datadog-key', 'DD_API_KEY', lambda: r(32, HEX)),
 ('algolia-api-key', 'ALGOLIA_ADMIN_KEY', lambda: r(32, HEX)),
 ('codecov-token', 'CODECOV_TOKEN', uuid),
 ('snyk-token', 'SNYK_TOKEN', uuid),
 ('fastly-api-token', 'FASTLY_API_TOKEN', lambda: r(32, A + '_-')),
 ('netlify-token', 'NETLIFY_AUTH_TOKEN', lambda: 'nfp_' + r(36)),
 ('launchdarkly-token', 'LAUNCHDARKLY_SDK_KEY', lambda: 'sdk-' + uuid()),
 ('twitch-api-token', 'TWITCH_CLIENT_SECRET', lambda: r(30, LD)),
 ('zendesk-api-token', 'ZENDESK_API_TOKEN', lambda: r(40)),
 ('asana-token', 'ASANA_ACCESS_TOKEN', lambda: '2/' + r(16, string.digits) + '/' + r(16, string.digits) + ':' + r(32, HEX)),
 ('gocardless-token', 'GOCARDLESS_ACCESS_TOKEN', lambda: 'live_' + r(40, A + '_-')),
 ('intercom-token', 'INTERCOM_ACCESS_TOKEN', lambda: r(60, A + '_-')),
 ('mattermost-token', 'MATTERMOST_TOKEN', lambda: r(26, LD)),
 ('contentful-token', 'CONTENTFUL_DELIVERY_TOKEN', lambda: r(43, A + '_-')),
 ('cohere-api-key', 'COHERE_API_KEY', lambda: r(40)),
 ('confluent-key', 'CONFLUENT_CLOUD_API_SECRET', lambda: r(64, A + '+/')),
 ('coinbase-key', 'COINBASE_API_SECRET', lambda: r(64, A + '_-')),
 ('plaid-key', 'PLAID_SECRET', lambda: r(30, HEX)),
 ('travisci-token', 'TRAVIS_API_TOKEN', lambda: r(22, A + '_-')),
 ('droneci-token', 'DRONE_TOKEN', lambda: r(32)),
 ('sendbird-token', 'SENDBIRD_API_TOKEN', lambda: r(40, HEX)),
 ('squarespace-token', 'SQUARESPACE_API_KEY', uuid),
 ('sumologic-key', 'SUMO_ACCESS_KEY', lambda: r(64)),
 ('messagebird-token', 'MESSAGEBIRD_API_KEY', lambda: r(25)),
 ('rapidapi-key', 'RAPIDAPI_KEY', lambda: r(50, A + '_-')),
 ('kraken-key', 'KRAKEN_PRIVATE_KEY', lambda: r(88, A + '/+')),
 ('kucoin-key', 'KUCOIN_API_KEY', lambda: r(24, HEX)),
 ('bittrex-key', 'BITTREX_API_SECRET', lambda: r(32, LD)),
 ('etsy-key', 'ETSY_API_KEY', lambda: r(24, LD)),
 ('finicity-key', 'FINICITY_APP_KEY', lambda: r(32, HEX)),
 ('finnhub-key', 'FINNHUB_API_KEY', lambda: r(20, LD)),
 ('flickr-key', 'FLICKR_API_KEY', lambda: r(32, LD)),
 ('freshbooks-token', 'FRESHBOOKS_ACCESS_TOKEN', lambda: r(64, LD)),
 ('gitter-token', 'GITTER_TOKEN', lambda: r(40, LD)),
 ('nytimes-key', 'NYTIMES_API_KEY', lambda: r(32)),
 ('beamer-api-key', 'BEAMER_API_KEY', lambda: 'b_' + r(44, A + '_-')),
 ('cisco-meraki-api-key', 'MERAKI_DASHBOARD_API_KEY', lambda: r(40, HEX)),
 ('privateai-key', 'PRIVATE_AI_API_KEY', lambda: r(32)),
 ('jfrog-identity-token', 'JFROG_ACCESS_TOKEN', lambda: r(64)),
 ('linear-client-secret', 'LINEAR_CLIENT_SECRET', lambda: r(32, HEX)),
 ('linkedin-client-secret', 'LINKEDIN_CLIENT_SECRET', lambda: r(16)),
 ('looker-client-secret', 'LOOKER_CLIENT_SECRET', lambda: r(24)),
 ('freemius-secret-key', 'FREEMIUS_SECRET_KEY', lambda: 'sk_' + r(29)),
]
for rule, name, value in CONTEXT_CASES:
    v = value()
    cases[rule] = ([ctx_case(sp(name, 3), v, len(v) // 2)],
                   [f'{name} = "${{{name}}}"', f'{name} = "{v[0] * len(v)}"'])

cases.update({
 'authress-service-key': ([sp('sc_' + r(12, LD) + '.' + r(5, LD) + '.acc_' + r(20, LD) + '.' + r(60, LD + '+/'), 2)], ['sc_short.abc']),
 'dropbox-app-secret': ([ctx_case(sp('DROPBOX_APP_SECRET', 3), r(15, LD), 7)], ['DROPBOX_APP_SECRET = "${DROPBOX_APP_SECRET}"', 'DROPBOX_APP_SECRET = "aaaaaaaaaaaaaaa"']),
 'lob-api-key': ([ctx_case(sp('LOB_API_KEY', 2), 'live_' + r(35, HEX), 10)], ['LOB_API_KEY = "${LOB_API_KEY}"', 'blob_key = "live_' + r(35, HEX) + '"']),
 'yandex-aws-access-key': ([ctx_case(sp('YANDEX_ACCESS_KEY_ID', 3), 'YC' + r(38, A + '_-'), 10)], ['YANDEX_ACCESS_KEY_ID = "${KEY}"']),
})

# A name that refers to a secret (found by the compat run in a Kubernetes snapshot).
cases['generic-secret'][1].extend(['secretName: bot-bottle-claude-1a2b3', 'secretKeyRef: db-creds-9f8e7d'])

# The entropy-gated net under the generic rules (gitleaks' `generic-api-key` kind): names the
# other generic rules do not take (key, auth, access, creds), and look-alike decoys: prose,
# placeholders, lockfile hashes, UUIDs, identifiers, names that say what the value is.
# Decoys are written as (name, value) and joined with `<>` spliced into the value, so neither
# this file nor the cases file holds the look-alike assignment gitleaks' generic rule reports.
def decoy(name, value):
    return name + sp(value, 4)
cases['generic-keyed-secret'] = (
    [f'key = acme_live_{sp(r(24, LD), 4)}',
     f'"deployKey": "{sp(r(32), 5)}"',
     f'ACME_AUTH={sp(r(28), 4)}',
     f'let cfg = "key = {sp(r(30, LD), 4)}\\n";',
     f'  access: {sp(base64.b64encode(r(24).encode()).decode(), 6)}'],
    ['api_key = "your-api-key-here"',
     'auth_key: "<insert your key here>"',
     'api_key: "see the README, section 4"',
     '"integrity": "sha512-' + base64.b64encode(bytes(random.randrange(256) for _ in range(64))).decode() + '"',
     decoy('key: ', 'sha512-' + base64.b64encode(bytes(random.randrange(256) for _ in range(48))).decode()),
     'checksum = "' + r(64, HEX) + '"',
     decoy('client_token: ', '3fa85f64-5717-4562-b3fc-2c963f66afa6'),
     decoy('api_key_id = ', '"' + r(32, HEX) + '"'),
     decoy('AUTH0_CLIENT_ID=', '"' + r(32) + '"'),
     decoy('Sec-WebSocket-Key: ', 'dGhlIHNhbXBsZSBub25jZQ=='),
     decoy('key=', '"ConnectionString_B2B"'),
     decoy('pixie-chart.deployKey=', 'px-dep-d4c3b2a1-f6e5-h8g7-j1i8-p5o0n5m3l2k1'),
     decoy('license_key: ', 'a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8NRAL'),
     decoy('key: ', 'self.config.api_key2;'),
     decoy('apiVersion: ', 'autoscaling.k8s.io/v2beta2'),
     decoy('token_url: ', 'oauth2.googleapis.com/token2'),
     decoy('cache_key = ', 'v2-deps-' + r(16, HEX)),
     decoy('next_page_token = ', r(40)),
     decoy('monkey_patch = ', 'Xv9' + r(20)),
     decoy('key_file = ', '/etc/ssl/private/server2.key'),
     decoy('API_KEY = ', 'API_KEY_FROM_VAULT_V2')],
)

# A password assigned in Terraform / HCL (gitleaks' hashicorp-tf-password kind).
cases['generic-password'][0].append(f'  administrator_login_{sp("password", 4)} = "{r(14)}"')

# Hugging Face organization API tokens (gitleaks' huggingface-organization-api-token kind,
# which the compat run on gitleaks' source found this rule did not cover).
cases['huggingface-token'][0].append(f'HF_ORG_TOKEN = "{sp("api_org_" + r(34, string.ascii_letters), 5)}"')
cases['huggingface-token'][1].append('api_org_' + 'b' * 34)

# Found by the compat run on gitleaks' source: Sourcegraph tokens in mixed-case hex, and Slack
# configuration refresh tokens (xoxe-1-...).
cases['sourcegraph-token'][0].append(sp('sgp_' + r(16, HEX + 'ABCDEF') + '_' + r(40, HEX + 'ABCDEF'), 3))
cases['sourcegraph-token'][1].append('sgp_5555555dAAAAA7777777CcccCFaaaaaaaaaaaaaa')
cases['slack-legacy-token'][0].append(f'"refresh_token": "{sp("xoxe-1-" + r(146), 4)}"')

# curl command lines (gitleaks' curl-auth-user / curl-auth-header kinds, which the compat run
# on gitleaks' source found missing): quoted -u/--user values, an empty password, -uuser:pass,
# commands continued over lines; any Authorization scheme and API-key / token headers.
cases['generic-cli-credentials'][0].extend([
    f"cu<>rl -s --user 'api:{r(14)}' \\\n    https://api.example.net/v2/messages",
    f'cu<>rl -s -v --user "j.smith:{r(12)}#4" "https://api.example.net/user/me"',
    f"cu<>rl --user kevin:'{r(16)}' -iX PATCH https://api.example.net",
    f'cu<>rl -u "{r(24)}:" https://api.example.net/v1/charges',
    f'cu<>rl -u ":{r(12)}" https://localhost:9200',
    f'cu<>rl -uadmin:{r(12)} https://ci.example.net/api',
    f'cu<>rl --user="admin:{r(12)}" https://ci.example.net/api',
    f'cu<>rl -k -X POST https://ci.example.net/rest \\\n  -H "Content-type: text/plain" \\\n  -u developer:{r(16)}',
])
cases['generic-cli-credentials'][1].extend([
    'curl -u "${_username}:${_password}"', 'curl -u "${username}":"${password}"',
    'curl -X POST --user "$(cat ./login.txt):$(cat ./password.txt)"', 'curl -u "`cat user`:`cat pass`" https://x',
    'curl -u "{{ .Values.username }}:{{ .Values.password }}"', 'curl -u "${{ secrets.USER }}:${{ secrets.PASS }}"',
    'curl -u <user:password> https://x', 'curl --user neo4j:[PASSWORD] http://localhost:7474/',
    'curl -u "myusername" http://localhost:15130/api/', 'curl -u ":" https://localhost:9200', 'curl -u admin: https://x',
    'curl --user "xxx:yyy"', 'curl -u username:token', 'curl -i -u \'test:test\'', 'curl --user user:pass --digest',
    'curl -u admin:YOUR_PASSWORD https://x', 'curl --user-agent "Mozilla/5.0 (X11; Linux x86_64)" https://x',
    'curl https://x\n\nrun -u admin:Zq8v' 'Kp2LmW3n', 'curl -u "admin:{password}" https://x', 'curl -u admin:{get_pass(user)} https://x',
])
cases['generic-curl-header-credential'] = ([
    f'cu<>rl --header  \'Authorization:  {r(8,HEX)}-{r(4,HEX)}-{r(4,HEX)}-{r(4,HEX)}-{r(12,HEX)}\'',
    f'cu<>rl -H "Authorization: Token {r(40,HEX)}" --request PUT https://api.example.net/use/635',
    f'cu<>rl -H "Authorization: Api-Token {r(40,HEX)}" https://api.example.net',
    f'cu<>rl -H "Authorization: ApiKey {r(32)}" https://api.example.net',
    f'cu<>rl -H \'Authorization: Digest {r(32)}\' https://api.example.net',
    f'cu<>rl -X GET https://api.example.net/ \\\n     -H "X-Octopus-ApiKey: {r(32)}" \\',
    f'cu<>rl -H "X-API-Key: {r(32)}" https://api.example.net',
    f'cu<>rl -H "X-Auth-Token: {r(32)}" https://api.example.net',
    f'cu<>rl -X GET \\\n     -H "apikey: {r(32)}" \\\n     -H "Accept: application/json"',
    f'cu<>rl -H Api-Key:{r(24)} https://api.example.net',
    f'cu<>rl -sH "Authorization: Token {r(40,HEX)}" https://api.example.net',
    f'#cu<>rl -X POST \\\n#  https://api.example.net/messages \\\n#  -H \'Authorization: Token {r(40)}\' \\',
    f'cu<>rl --header="X-Access-Token: {r(32)}" https://api.example.net',
    # Bearer and Basic in a curl command: this rule's finding (on curl's line), not the
    # Authorization-header rules' (literals, so the seeded values above stay as they were).
    'cu<>rl https://api.example.net/v1/chat \\\n  -H "Content-Type: application/json" \\\n  -H "Authorization: Bearer Hx9V<>q2LmP4rT7kWz8Nc3Yb6HdQ"',
    'cu<>rl -X POST -H "Authorization: Basic c3Zj<>LWRlcGxveTpacTh2S3AyTG1XM25SN3RZ" https://api.example.net',
], [
    'curl -H "Authorization: Bearer $TOKEN" https://x', 'curl -H "Authorization: Token ${API_TOKEN}" https://x',
    'curl -H "Authorization: Bearer $(gcloud auth print-access-token)" https://x',
    'curl -H "Authorization: Token `cat token`" https://x', 'curl -H "X-API-Key: $API_KEY" https://x',
    'curl -H "Authorization: Bearer <token>" https://x', 'curl -H "Authorization: Bearer YOUR_TOKEN" https://x',
    'curl -H "Authorization: Token YOUR_API_TOKEN" https://x', 'curl -H "X-API-Key: xxxxxxxxxxxxxxxx" https://x',
    'curl -H "Authorization: Bearer XXXXXXXXXXXX" https://x', 'curl -H "Authorization: Token **********" https://x',
    'curl --header "Authorization: Basic ..." https://x', 'curl -H "Authorization: Negotiate $SPNEGO" https://x',
    'curl -H "Authorization: basic {base64(email:password)}" https://x',
    'curl -H "Content-Type: application/json" -H "Accept: application/json" https://x',
    'curl -H "X-Request-Id: 3f9c2a7b5d1e4f60" https://x',
    'curl -H "Authorization: AWS4-HMAC-SHA256 Credential=<key-id>/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=<signature>" https://x',
    "curl -H 'Authorization: Digest username=\"admin\", realm=\"api\"' https://x",
    'curl https://x\n\nfetch -H "X-API-Key: Zq8v' 'Kp2LmW3nR7tY" https://x',
])

# Decoys from comparing with gitleaks on its own source (issue 23; the values are ours, in the
# shapes of the lines there): what the name or the value says is not a secret.
cases['gcp-api-key'][1].extend([
    # The example key string of Google Cloud's "Authenticate using API keys" page.
    'key: "AIza<>SyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"',
    # The alphabet in order: made up (the Firebase JS SDK's TEST_API_KEY has this shape).
    'apiKey: "AIzaSy' + 'abcdefghijklmnopqrstuvwxyz' + '1234567"',
])
cases['generic-secret'][1].extend([
    "withCredentials([usernamePassword(credentialsId: '7c2e9a41-3b8d-4f06-a5e1-9d4c7b2f8e30', usernameVariable: 'U', passwordVariable: 'P')])",
    "jobCredentialsId: 'e41b7d09-6a2c-4f8e-b3d5-1c9a7e0f2d64'",
    '  "credentialId": "Tq7vLm2Xk9Rp4sWz8Hn3Yd",',
    'publicToken = "Wf3kQ9zLm2Xv7Rt4Np8Ys1Bd6Hc5Jg0KaE2uTo9Vi"',
    'PUBLIC_TOKEN: Wf3kQ9zLm2Xv7Rt4Np8Ys1Bd6Hc5Jg0',
])
# An allowlist for one value must not hide the next one on the same line (a JSON body is one
# line to DLP): no built-in allowlist judges the whole line.
cases['generic-secret'][0].extend([
    '{"publicToken":"Wf3kQ9zLm2Xv7Rt4Np8Ys1Bd6Hc5Jg0","client_secret":"Hq4<>vNz8Lk2Wr7Xp3Ty9Mc5Bd"}',
    '{"secretName":"bot-bottle-claude-1a2b3","auth_token":"Rt6<>mKq2Zx9Lw4Vn7Yp3Hs"}',
])
cases['generic-keyed-secret'][1].extend([
    "billing-events-api:rc2.4.1_20240105_0930-SNAPSHOT'",
    'notes = "Maven - io.jsonwebtoken:jjwt-impl-0.12.5"',
    'libkeyfi<>nder:arm64-uwp=fail',
    "schemaKey = 'DOC_Invoice_7_64'",
    'pub const SN_id_aes256_wrap_KeyTransport = "id-aes256-wrap-KeyTransport"',
    # snake_case identifiers: a type, a field, a function in source code (linux-raw-sys,
    # k8s-openapi, ring: 117 findings on the cargo registry before)
    'pub const NL80211_AUTHTYPE_MAX: nl80211_auth_type = nl80211_auth_type::NL80211_AUTHTYPE_FILS_PK;',
    'Field::Key_open_api_v3_schema => value_open_api_v3_schema = crate::serde::de::MapAccess::next_value(&mut map)?,',
    'pub edd_device_params: edd_device_params__bindgen_ty_2__bindgen_ty_2,',
    'let key = x25519_generate_private_key;',
])
cases['generic-keyed-secret'][0].extend([
    # a random run among the underscores is no identifier
    'signing_key = "k9x2mq7w_t4z<>r8np3v_b6yc1hd5"',
])
cases['infracost-api-key'][1].extend([
    'http://cdn.example.net/media/player.ico-9b1e4f7a2c6d8e03f5a7b9c1d3e5f702.png',
])
cases['terraform-cloud-token'][1].extend(['token = "' + 'x' * 14 + '.atlasv1.' + 'x' * 67 + '"'])
cases['hashicorp-vault-token'][1].extend(['hvs.' + 'x' * 95])

# The API keys of Firebase's SDK tests (gcp-api-key's allowlist): published test inputs.
cases['gcp-api-key'][1].extend([
    'apiKey: "AIza<>SyAnLA7NfeLquW1tJFpx_eQCxoX-oo6YyIs"',
    "isValidApiKeyFormat('AIza<>SyA4UrcGxgwQFTfaI3no3t7Lt1sjmdnP5sQ')",
    'String API_KEY = "AIza<>yDNSXIbFmlXbIE6mCzDLQAqITYefhixbX4A";',
])
# A name that says where secrets are stored: its value is the store's name.
for rid in ('generic-secret', 'generic-keyed-secret'):
    cases[rid][1].extend([
        '  keyVaultToStoreSecrets: cmp2-qat-1208358310',
        '  secret_store: acme-secrets-ps9x7w2k',
    ])
cases['generic-secret'][0].extend(['  keyVaultClientSecret: Hq4<>vNz8Lk2Wr7Xp3Ty9Mc5Bd1Qe6'])

# A Vault service token of before v1.10 (`s.` and 24 letters and digits) wherever it stands,
# as gitleaks' vault-service-token finds it; identifiers after `s.` are not tokens.
cases['vault-service-token-legacy'] = (['token: s.Qm<>7Xv2Lk9Rt4Wz8Np3Hd6Yc1', 'VAULT_ADDR=https://v.example.net; export X=s.Tw<>5nB8qK2mZ7rL4xV9cH3jD6'], [])
cases['vault-service-token-legacy'][1].extend([
    'credentials: new AWS.SharedIniFileCredentials({ profile: x })',
    's.AcceptanceTimeoutSeconds = 30', 's.makeKubeConfigController = args',
    's.xxxxxxxxxxxxxxxxxxxxxxxx', 's.THISSTRINGISALLUPPERCASE', 's.thisstringisalllowercase',
    'o.s.b.f.s.DefaultListableBeanFactory     : Overriding bean definition for bean',
])
# A legacy Sourcegraph access token (40 hex digits) assigned to a Sourcegraph name.
cases['sourcegraph-token'][0].extend(['sourcegraph: 920<>C9dcAb468e07De032fd0AEdb161CbF5D6bCbC', 'SOURCEGRAPH_ACCESS_TOKEN="920C9<>dcAb468e07De032fd0AEdb161CbF5D6bCbC"'])
cases['sourcegraph-token'][1].extend(['sourcegraph_commit: 920c9dcab468e07de032fd0aedb161cbf5d6bcbc', 'indexed by sourcegraph at 920c9dcab468e07de032fd0aedb161cbf5d6bcbc'])
# A made-up key: a run of the alphabet in the body (gitleaks' anthropic.go false positives).
cases['anthropic-api-key'][1].extend([
    'sk-ant-api03-abc123xyz-456def789ghij-klmnopqrstuvwx-3456yza789bcde-1234fghijklmnopby56aaaogaopaaaabc123xyzBB',
    'sk-ant-admin01-abc123xyz-456def789ghij-klmnopqrstuvwx-3456yza789bcde-1234fghijklmnopby56aaaogaopaaaabc123xyzAA',
])

# A clear-text NuGet source password in any XML settings file (web.config appSettings use the
# same form); the two samples of Microsoft's nuget.config reference are not secrets.
cases['generic-config-password'][0].extend(['<add key="ClearTextPassword" value="Tq7vL<>m2Xk9Rp4s" />'])
cases['generic-config-password'][1].extend([
    '<add key="ClearTextPassword" value="33f!!lloppa" />',
    '<add key="ClearTextPassword" value="hal+9ooo_da!sY" />',
    '<add key="ClearTextPassword" value="%NUGET_PASSWORD%" />',
])

# A UUID assigned to a name that ends in token, secret or API key (some vendors' tokens are
# UUIDs: Heroku API keys, npm's legacy tokens, Vault's before v0.10), as gitleaks'
# generic-api-key reports it; ids, page cursors and the nil UUID are not.
cases['generic-token-uuid'] = (
    ['utils.GetEnvOrDefault("api_token", "5c0e<>9a61-7f2d-4b38-a1e6-93d27c4f8b05")',
     'headers = ["apikey: 8e21<>d4b7-3c9a-4f60-b5e2-71a9c3d06f48"]',
     "token = config.get('heroku_api_key', '7a3c<>e915-2b4d-4e8f-9c61-d05b28f7a493')"],
    ['clientId = "73082700-1f09-405b-80d0-3131bfd6272d"',
     'report_access_id: e8e4df51-2054-49b0-ab1c-516ac95c691d',
     '"kms_key_id": "555ea4a3-d53a-4412-9c66-3a7cb667b0d6"',
     ' <UserSecretsId>79a3edd0-2092-40a2-a04d-dcb46d5ca9ed</UserSecretsId>',
     'csrf_token: 2f6b1c9e-4d3a-4e7b-8a05-c91d6e2f7b30',
     'next_page_token = "9c4e2a17-5b3d-4f80-a6c2-1e7d9b05f348"',
     'api_token: 00000000-0000-0000-0000-000000000000',
     'TOKEN_AUDIENCE = "25872395-ed3a-4703-b647-22ec53f3683c"'],
)

# Not base32 after the prefix (a 0, 1, 8 or 9): not an access key id.
cases['aws-access-key-id'][1].extend(['Secret: "ASIAIOSFODNN7LXM10JI",', 'AKIAZ3MSJV4WWNKWW5F0'])

# A path rule: its cases are file paths (`by_path`), not text.
cases['pkcs12-file'] = (
    ['deploy/certs/client.p12', 'signing/AppStore.PFX', 'build.zip!keys/release.p12', 'C:\\certs\\iis.pfx'],
    ['deploy/certs/client.pem', 'docs/p12-export.md', 'src/pfx.rs', 'certs/client.p12.md', 'keys/.p12'],
)
BY_PATH = {'pkcs12-file'}

# Rules for secrets the assignment rules did not see (branch npneg): a generated secret with
# punctuation, a Gradle buildConfigField secret, a Postmark server token (a UUID).
cases['generic-secret-punctuated'] = (
    ['JWT_SEC<>RET = \'Zq8$w]Lk3!pV;9xR"t2]mN7{bH4:cY6\'',
     'SEC<>RET_KEY = "k#9vR2$mQ7;xL4]tW8\'zN1}pB6`D3"',
     '  signing_k<>ey: "g7T;e2$Rk9]wQ4\'mZ8:xP1vL5}nB3"'],
    ['password_regex = "^(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9]).{8,}$"',
     'PASSWORD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!$%;:"',
     'token: "Bearer:${ACCESS_TOKEN};v=2"',
     '"pass<>word": "pbkdf2_sha256$260000$Qx7kR2mN$Wq9zL4vT8yB3nC6"',
     'secret_store: "https://vault.example.net:8200/v1/kv;x=1"',
     "api_k<>ey: 'Qk7vR2mW9xL4tZ8nB3yC6pD1'",
     'pass<>word = "The;quick;brown;fox;jumps;over"',
     'token = "{user}:{0};{expires}:{sig}1"',
     'password: "aaaa;aaaa;aaaa;aaaa;aaaa;1"'],
)
cases['gradle-build-config-secret'] = (
    ['buildConfig<>Field \'String\', \'MAPS_API_KEY\', \'"8f3<>c2a9d1e7b4f60a5c8e2d9b1f7a3c6"\'',
     'buildConfig<>Field("String", "BACKEND_SECRET", "\\"Qz2<>LmW8vR4tY7nB3xC6\\"")',
     '    buildConfig<>Field "String", "apiToken", "\\"t7Kp<>2xW9qL4mZ8vN3\\""'],
    ['buildConfigField \'String\', \'API_KEY\', \'"your_api_key_here"\'',
     'buildConfigField "String", "API_KEY", "\\"${apiKey}\\""',
     'buildConfigField \'String\', \'PUBLIC_KEY\', \'"pk3a9c2e7d1b8f4a6c0e5d9b2f7a1"\'',
     'buildConfigField \'String\', \'BASE_URL\', \'"https://api.example.net/v2"\'',
     'buildConfigField \'String\', \'API_KEY\', \'System.getenv("API_KEY")\'',
     'buildConfigField \'String\', \'SIGNING_KEY_ID\', \'"k3y9d2x7q1w8"\'',
     'buildConfigField "String", "API_KEY", "\\"xxxxxxxxxxxxxxxx\\""'],
)
cases['postmark-server-token'] = (
    ['post<>mark: "3f1<>c9a2e-7b4d-4e8f-a6c1-d5e2b9f0a374",',
     'POST<>MARK_SERVER_TOKEN=9c2<>e5f1a-4d7b-4a3c-b8e6-1f0d7c2a9e45',
     'curl -H "X-Post<>mark-Server-Token: 6a1<>d8c3f-2e9b-4f7a-9c5d-8b3e0a6f1d27" https://api.postmarkapp.com/email'],
    ['postmark_message_id: "0a7c3e1f-9b2d-4c5e-8f6a-3d1b7e9c2a40"',
     'postmarkTemplateId = "5e2b8d1c-7a3f-4e9b-b6c2-9d0a4f7e1b38"',
     'POSTMARK_SERVER_TOKEN=00000000-0000-0000-0000-000000000000',
     'POSTMARK_API_TOKEN=${POSTMARK_TOKEN}',
     '"PostmarkStreamID": "c4e7a2d9-1b6f-4a3e-8c5d-2f9b7e0a1c63"',
     'postmark: "see the settings page"'],
)

# Apple's constants and a C enum's name with a CamelCase member are names, not values.
cases['generic-keyed-secret'][1].extend([
 'ECDHKeyExchangeCofactorX963SHA1 => kSecKeyAlgorithmECDHKeyExchangeCofactorX963SHA1,',
 'UnorderedAccessView_mut: D3D12_INDIRECT_ARGUMENT_DESC_UnorderedAccessView,',
])
cases['generic-keyed-secret'][0].append('SVC_AU<>TH=kQ7vR2xLm9TzP4wN8sKd')

out=['# Positive and negative cases for every built-in rule (see builtin.toml).',
     '# `<>` is removed before scanning: it keeps well-formed tokens out of the repository.','']
def q(s): return json.dumps(s)
for rid,(pos,neg) in cases.items():
    out.append('[[case]]'); out.append(f'rule = {q(rid)}')
    out.append('positive = [' + ', '.join(q(p) for p in pos) + ']')
    out.append('negative = [' + ', '.join(q(n) for n in neg) + ']')
    if rid in BY_PATH:
        out.append('by_path = true')
    out.append('')
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'builtin-cases.toml'),'w').write('\n'.join(out))
