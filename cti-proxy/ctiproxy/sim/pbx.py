"""The simulated telephony system: users, phones, agents and queues, their statuses, the directory."""

import datetime
import unicodedata

from .protocol import DEFAULT_USERS, IPBX_ID

PEOPLE = [('Alice', 'Martin', 'alice'), ('H\u00e9l\u00e8ne', 'Dupr\u00e9', 'helene'),
          ('J\u00fcrgen', 'Gro\u00df', 'jurgen'), ('Zo\u00eb', '\U0001f600', 'zoe'), ('Bob', 'Smith', 'bob'),
          ('\u0141ukasz', '\u017b\u00f3\u0142w', 'lukasz'), ('Ana', 'N\u00fa\u00f1ez', 'ana'),
          ('S\u00f8ren', '\u00d8deg\u00e5rd', 'soren')]
QUEUES = [('support', 'Support'), ('sales', 'Sales'), ('accueil', 'Accueil \u2014 R\u00e9ception')]
CONTACTS = [('H\u00e9l\u00e8ne Dupr\u00e9', '1002', 'Simulated Inc.', 'helene@example.com'),
            ('J\u00fcrgen Gro\u00df', '+49 30 1234567', 'Gro\u00df & S\u00f6hne', 'jurgen@example.de'),
            ('Zo\u00eb \U0001f600', '+33 6 12 34 56 78', '', 'zoe@example.fr'),
            ('Fran\u00e7ois Lef\u00e8vre', '+33 1 23 45 67 89', 'Caf\u00e9 de la Gare', ''),
            ('\u674e\u5a1c (Li Na)', '+86 10 1234 5678', '\u5317\u4eac', 'lina@example.cn'),
            ('Bob Smith', '1005', 'Simulated Inc.', 'bob@example.com')]
DIRECTORY_HEADERS = ['Name', 'Number', 'Company', 'E-mail']
USER_STATUSES = {
    'available': ('Available', '#08FD20'), 'away': ('Away', '#FDE50A'),
    'outtolunch': ('Out to lunch', '#001AFF'), 'donotdisturb': ('Do not disturb', '#FF032D'),
    'berightback': ('Be right back', '#FFB545'), 'disconnected': ('Disconnected', '#202020')}
PHONE_STATUSES = {'-2': ('Does not exist', '#030303'), '-1': ('Deactivated', '#000000'),
                  '0': ('Available', '#0DFF25'), '1': ('On the phone', '#FF032D'), '2': ('Busy', '#FF0008'),
                  '4': ('Unavailable', '#FFFFFF'), '8': ('Ringing', '#1B0AFF'),
                  '9': ('On the phone and ringing', '#FF0526'), '16': ('On hold', '#F7FF05')}
PRESENCE_CYCLE = ['away', 'donotdisturb', 'outtolunch', 'berightback', 'available']
SERVICES = ['enablednd', 'fwdunc', 'fwdbusy', 'fwdrna']


def folded(text):
    """Text for matching a directory search: case and accents ignored ('zoe' finds 'Zo\u00eb')."""
    decomposed = unicodedata.normalize('NFKD', text.casefold())
    return ''.join(char for char in decomposed if not unicodedata.combining(char))


# -- the simulated telephony system --


class FakePBX:
    """The simulated system's configuration: users, phones, agents (one each per user) and queues."""

    def __init__(self, users=DEFAULT_USERS):
        self.size = {'users': users, 'phones': users, 'agents': users, 'queues': (users + 3) // 4}

    def ids(self, listname):
        """The ids of a list, as strings, as the server sends them."""
        return [str(number) for number in range(1, self.size[listname] + 1)]

    def person(self, tid):
        """(first name, last name, login) of user, phone owner or agent number tid."""
        index = int(tid) - 1
        first, last, login = PEOPLE[index % len(PEOPLE)]
        round_ = index // len(PEOPLE)
        if round_:
            return first, '%s %d' % (last, round_ + 1), '%s%d' % (login, round_ + 1)
        return first, last, login

    def user_for_login(self, login):
        """The id of the user with this login; user 1 for any other login (the simulator is lenient)."""
        for tid in self.ids('users'):
            if self.person(tid)[2] == login:
                return tid
        return '1'

    def fullname(self, tid):
        """'First Last' of user tid."""
        first, last, _ = self.person(tid)
        return '%s %s' % (first, last)

    def phone_for_number(self, number):
        """The id of the phone with this number, or None."""
        for tid in self.ids('phones'):
            if str(1000 + int(tid)) == number:
                return tid
        return None

    def config(self, listname, tid):
        """What getlist updateconfig says about one item."""
        number = int(tid)
        if listname == 'users':
            first, last, login = self.person(tid)
            return {'firstname': first, 'lastname': last, 'fullname': self.fullname(tid), 'loginclient': login,
                    'mobilephonenumber': '+33 6 00 00 %02d %02d' % (number // 100 % 100, number % 100),
                    'enablednd': False, 'enableunc': False, 'destunc': '', 'enablebusy': False, 'destbusy': '',
                    'enablerna': False, 'destrna': '', 'linelist': ['%s/%s' % (IPBX_ID, tid)], 'agentid': tid}
        if listname == 'phones':
            return {'number': str(1000 + number), 'context': 'default', 'protocol': 'sip',
                    'identity': 'SIP/sim%d' % number, 'iduserfeatures': number}
        if listname == 'agents':
            first, last, _ = self.person(tid)
            return {'firstname': first, 'lastname': last, 'number': str(2000 + number), 'context': 'default'}
        name, displayname = QUEUES[(number - 1) % len(QUEUES)]
        round_ = (number - 1) // len(QUEUES)
        if round_:
            name, displayname = '%s%d' % (name, round_ + 1), '%s %d' % (displayname, round_ + 1)
        return {'name': name, 'displayname': displayname, 'number': str(3000 + number), 'context': 'default'}

    def status(self, listname, tid):
        """What getlist updatestatus says about one item before anything happened."""
        number = int(tid)
        if listname == 'users':
            return {'availstate': PRESENCE_CYCLE[number % len(PRESENCE_CYCLE)], 'connection': 'no'}
        if listname == 'phones':
            return {'hintstatus': '0', 'channels': []}
        if listname == 'agents':
            queue_ids = self.ids('queues')
            return {'availability': 'available' if number % 2 else 'logged_out',
                    'queues': [queue_ids[(number - 1) % len(queue_ids)]]}
        members = [agent for agent in self.ids('agents') if (int(agent) - 1) % self.size['queues'] == number - 1]
        return {'agentmembers': members, 'phonemembers': []}

    def history(self, userid, mode, size):
        """A deterministic call history of size entries for user userid."""
        users = self.ids('users')
        base = datetime.datetime.now().replace(minute=0, second=0, microsecond=0)
        entries = []
        for step in range(size):
            other = users[(int(userid) + step) % len(users)]
            entries.append({'calldate': (base - datetime.timedelta(hours=step)).strftime('%Y-%m-%dT%H:%M:%S'),
                            'duration': 30 + 17 * step, 'fullname': self.fullname(other),
                            'extension': str(1000 + int(other)), 'mode': mode})
        return entries


def capabilities():
    """The capas of the login_capas answer: what the user may do and the statuses it will see."""
    return {'regcommands': {}, 'ipbxcommands': {}, 'preferences': False,
            'userstatus': {name: {'longname': longname, 'color': colour, 'allowed': list(USER_STATUSES),
                                  'actions': {'enablednd': 'true' if name == 'donotdisturb' else 'false'}}
                           for name, (longname, colour) in USER_STATUSES.items()},
            'phonestatus': {code: {'longname': longname, 'color': colour}
                            for code, (longname, colour) in PHONE_STATUSES.items()},
            'services': list(SERVICES)}


def directory_search(pattern):
    """The directory's lines (fields joined by ';') whose name contains pattern, case and accents ignored."""
    wanted = folded(pattern)
    return [';'.join(contact) for contact in CONTACTS if wanted in folded(contact[0])]
